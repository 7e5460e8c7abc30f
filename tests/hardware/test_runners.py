"""Conformance of every registered runner: its ``Options`` dataclass is exactly its
constructor's keyword arguments (the recipe parser builds runners from it), and
it implements the ``Runner`` interface without stubs."""
import dataclasses
import inspect

import pytest

from hardware import RUNNERS, Runner
from hardware.base import TimedRunner


@pytest.mark.parametrize("name", RUNNERS.names())
def test_options_are_the_constructor_arguments(name):
    cls = RUNNERS.get(name)
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    options = {f.name: f.default for f in dataclasses.fields(cls.Options)}
    params = {p.name: p.default for p in list(inspect.signature(cls.__init__).parameters.values())[1:]}
    assert options == params, f"{name}: Options {options} != __init__ {params}"


@pytest.mark.parametrize("name", RUNNERS.names())
def test_implements_the_interface(name):
    cls = RUNNERS.get(name)
    assert issubclass(cls, Runner) and cls.name == name and not inspect.isabstract(cls)
    if issubclass(cls, TimedRunner):
        # timed runners are driven by the protocol; the others override measure_batch
        assert cls.measure_batch is TimedRunner.measure_batch
    else:
        assert cls.measure_batch is not Runner.measure_batch
