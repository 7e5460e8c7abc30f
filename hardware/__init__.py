"""Measurement runners (``RUNNERS``) and the measurement store.

Optional backends (CUDA, TensorRT, remote) register lazily-importing classes,
so this package imports on a CPU-only machine.
"""
from hardware.base import Fingerprint, Runner
from nas.registry import Registry

RUNNERS: Registry[type[Runner]] = Registry("runner")


def register_runner(cls: type[Runner]) -> type[Runner]:
    RUNNERS.register(cls.name, cls)
    return cls


def make_runner(name: str, **options) -> Runner:
    return RUNNERS.create(name, **options)


from hardware.cpu_runners import OnnxRuntimeCPURunner, TorchCPURunner  # noqa: E402

register_runner(TorchCPURunner)
register_runner(OnnxRuntimeCPURunner)

# GPU and remote runners: their modules import torch/TensorRT/CUDA only when used
from hardware.cuda_runner import TorchCUDARunner  # noqa: E402
from hardware.remote import RemoteRunner  # noqa: E402
from hardware.remote.farm import FarmRunner  # noqa: E402 - the queue and sqlalchemy load when one is built
from hardware.tensorrt_runner import OnnxRuntimeGPURunner, TensorRTRunner  # noqa: E402

register_runner(TorchCUDARunner)
register_runner(TensorRTRunner)
register_runner(OnnxRuntimeGPURunner)
register_runner(RemoteRunner)
register_runner(FarmRunner)

__all__ = ["RUNNERS", "Runner", "Fingerprint", "make_runner", "register_runner"]
