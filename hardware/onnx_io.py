"""ONNX export and verification shared by the runners and ``hwnas export``."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

DEFAULT_OPSET = 17


def export_onnx(model, example, path: str | Path | None = None, opset: int = DEFAULT_OPSET,
                input_names=("input",), output_names=("output",), dynamic_batch: bool = False) -> bytes:
    """Export ``model`` to ONNX; returns the serialized bytes (and writes ``path`` if given).

    The TorchScript-based exporter is used because it is ~10x faster than the
    dynamo one for these convolutional graphs, and the runners export every
    candidate; the dynamo exporter is the fallback where the legacy one is gone.
    """
    import torch

    model = model.eval()
    buffer = io.BytesIO()
    dynamic_axes = {n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except (TypeError, RuntimeError, AttributeError):
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, dynamo=True, opset_version=max(opset, 18),
                              input_names=list(input_names), output_names=list(output_names))
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def ort_session(model_bytes_or_path, threads: int = 1, providers=("CPUExecutionProvider",)):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = str(model_bytes_or_path) if isinstance(model_bytes_or_path, Path) else model_bytes_or_path
    return ort.InferenceSession(source, sess_options=options, providers=list(providers))


def verify_onnx(model_bytes_or_path, model, example) -> float:
    """Max abs difference between ONNX Runtime and PyTorch outputs on ``example``."""
    import torch

    session = ort_session(model_bytes_or_path)
    name = session.get_inputs()[0].name
    (onnx_out,) = session.run(None, {name: example.numpy()})[:1]
    with torch.no_grad():
        torch_out = model.eval()(example).numpy()
    return float(np.max(np.abs(onnx_out - torch_out)))
