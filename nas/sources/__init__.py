"""Objective sources, one module per kind; importing this package registers them all.

See :mod:`nas.sources.base` for the contract.  ``LATENCY_SOURCES``:
``runner``, ``device``, ``predictor``, ``slm``, ``table``; ``ACCURACY_SOURCES``:
``train``, ``lm``, ``table``, ``supernet``.
"""
from nas.sources.base import (ACCURACY_SOURCES, LATENCY_SOURCES, MAXIMIZE, MINIMIZE, AccuracySource, CachedSource,
                              LatencySource, ObjectiveSource, RunContext, make_progress, make_source, parse_source)
from nas.sources.device import DeviceLatency
from nas.sources.lm import LMAccuracy
from nas.sources.predictor import PredictorLatency
from nas.sources.runner import RunnerLatency
from nas.sources.slm import SLMLatency
from nas.sources.supernet import SupernetAccuracy
from nas.sources.table import TableAccuracy
from nas.sources.table_latency import TableLatency
from nas.sources.train import TrainAccuracy

__all__ = ["ACCURACY_SOURCES", "LATENCY_SOURCES", "MAXIMIZE", "MINIMIZE", "AccuracySource", "CachedSource",
           "LatencySource", "ObjectiveSource", "RunContext", "make_progress", "make_source", "parse_source",
           "DeviceLatency", "LMAccuracy", "PredictorLatency", "RunnerLatency", "SLMLatency", "SupernetAccuracy",
           "TableAccuracy", "TableLatency", "TrainAccuracy"]
