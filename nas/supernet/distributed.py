"""Supernet training on several processes: process group, DDP wrapper, global batch norm.

``torchrun --nproc_per_node N -m nas.cli train-supernet RECIPE`` starts N copies of the
command; :func:`process_group` recognises them from torchrun's environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and joins them in one process group (gloo
on CPU, NCCL on CUDA with rank ``r`` on ``cuda:LOCAL_RANK``), torn down on the way out,
errors included.  Without torchrun (or with ``WORLD_SIZE=1``) it yields
:data:`SINGLE` and nothing distributed happens.

Batch norm.  A sub-network runs its stand-alone modules on slices of the shared
weights (:mod:`nas.supernet.elastic`), so its batch-norm layers are the skeleton's,
never the supernet's own modules, and statistics computed per rank on its slice of
the batch would differ from the one-process statistics of the whole batch (the loss
curves would part from the first step).  ``torch.nn.SyncBatchNorm`` would fix that,
but in this torch (2.14) it refuses CPU tensors ("SyncBatchNorm expected input tensor
to be on GPU"), and gloo on CPU is what most users of this package have.
:func:`global_batch_norm` does the same thing with differentiable all-reduces that
work on gloo and NCCL alike: the mean and (two-pass) variance cover the global
batch, gradients flow through both, and the running statistics get exactly the
one-process update.  One implementation serves both back-ends, so the path the CPU
tests check is the path a GPU run takes.
"""
from __future__ import annotations

import copy
import inspect
import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.parallel import DistributedDataParallel

#: torchrun's variables, read in this order
ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    #: separate group for the batch-norm all-reduces, so that their order can never
    #: interleave with DDP's asynchronous gradient buckets on the default group
    norm_group: Any = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over the ranks (``values`` itself on one process)."""
        if not self.distributed:
            return values
        values = values.clone()
        torch.distributed.all_reduce(values)
        return values / self.size


SINGLE = World()


def world_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(WORLD_SIZE, RANK, LOCAL_RANK)`` as torchrun sets them; ``(1, 0, 0)`` outside it."""
    env = os.environ if env is None else env
    values = []
    for key in ENV_KEYS:
        raw = env.get(key, "1" if key == "WORLD_SIZE" else "0")
        try:
            values.append(int(raw))
        except ValueError:
            raise ValueError(f"environment variable {key}={raw!r} is not an integer "
                             "(set by torchrun; unset it to train on one process)") from None
    size, rank, local_rank = values
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: WORLD_SIZE={size}, RANK={rank}, "
                         f"LOCAL_RANK={local_rank}")
    return size, rank, local_rank


@contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """The :class:`World` of this process; joins (and finally leaves) the process group
    when torchrun started several.  ``device`` picks the back-end: NCCL for CUDA (this
    rank then works on ``cuda:LOCAL_RANK``), gloo otherwise."""
    size, rank, local_rank = world_from_env()
    if size == 1:
        yield SINGLE
        return
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but torch sees only {torch.cuda.device_count()} "
                             "CUDA device(s); start fewer processes per node")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    try:
        yield World(size, rank, local_rank, norm_group=dist.new_group())
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device this rank trains on: its own GPU under torchrun."""
    if world.distributed and device.type == "cuda":
        return torch.device("cuda", world.local_rank)
    return device


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks: each rank's input feeds every rank's output,
    so its gradient is the sum of every rank's output gradient.  (The same as
    ``torch.distributed.nn.functional.all_reduce``, which this torch deprecates in favour
    of functional collectives that have no gradient.)"""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        tensor = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad, ctx.group), None


def all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    return _AllReduceSum.apply(tensor, group)


def global_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, group) -> torch.Tensor:
    """Training-mode batch norm of ``x`` (this rank's slice) with statistics over the
    slices of every rank in ``group``; updates ``bn``'s running statistics as
    ``F.batch_norm`` would on the whole batch.  Affine, no activation."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dims = [0, *range(2, x.dim())]
    x32 = x.float()  # statistics in fp32 also under autocast, as cuDNN's batch norm keeps them
    local = torch.cat([x32.sum(dims), x32.new_tensor([x32.numel() / x32.shape[1]])])
    total = all_reduce(local, group)
    count = total[-1]
    mean = total[:-1] / count
    centred = x32 - mean.view(shape)
    # two passes (mean first) rather than E[x^2] - E[x]^2 in one: that cancels in fp32; one
    # pass in fp64 was no faster here and follows F.batch_norm less closely (the tiny test's
    # 2-process losses drifted to 1.6e-5 of the 1-process ones by step 10, against <= 2.2e-7)
    var = all_reduce(centred.square().sum(dims), group) / count
    y = centred * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
            unbiased = var.detach() * (count / (count - 1))  # what F.batch_norm stores
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    return y.to(x.dtype)


def _after_plain(module, y):
    return y


def _after_norm_act(module, y):
    return module.act(module.drop(y))


def _supported() -> dict[type, Any]:
    """Batch-norm classes whose forward is ``F.batch_norm`` then (optionally) drop + act."""
    plain = {cls: _after_plain for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)}
    return {**plain, BatchNormAct2d: _after_norm_act}


class _GlobalBatchNorm:
    """Mixin placed in front of a batch-norm class: global statistics in training mode."""

    norm_group: Any = None
    after: Any = None

    def forward(self, x):
        if not self.training:  # eval: running statistics, identical on every rank
            return super().forward(x)
        return type(self).after(self, global_batch_norm(self, x, self.norm_group))


_GLOBAL_CLASSES: dict[type, type] = {}


def with_global_batch_norm(module: nn.Module, group) -> nn.Module:
    """A copy of ``module`` whose batch-norm layers normalise over ``group``'s global batch.

    Parameter and buffer names stay the same (only the layers' classes change), so
    ``torch.func.functional_call`` binds the supernet's slices to the copy exactly as
    to the original.  A batch-norm class whose forward is not known is refused rather
    than silently left per-rank.
    """
    supported = _supported()
    module = copy.deepcopy(module)  # skeletons live on the meta device: nothing is copied but structure
    for name, child in module.named_modules():
        if not isinstance(child, nn.modules.batchnorm._BatchNorm):
            continue
        cls = type(child)
        if cls not in supported:
            raise ValueError(f"cannot synchronise batch norm {name!r} of type {cls.__qualname__} across "
                             "processes (supported: " + ", ".join(c.__name__ for c in supported) + ")")
        if cls not in _GLOBAL_CLASSES:
            _GLOBAL_CLASSES[cls] = type(f"Global{cls.__name__}", (_GlobalBatchNorm, cls),
                                        {"after": staticmethod(supported[cls])})
        child.__class__ = _GLOBAL_CLASSES[cls]
        child.norm_group = group
    return module


class DistributedSupernet(nn.Module):
    """``supernet(x, arch)`` with batch-norm statistics over the global batch: the module
    DDP wraps (the supernet's parameters are its parameters)."""

    def __init__(self, supernet, group):
        super().__init__()
        self.supernet = supernet
        self.group = group
        # converted skeletons, bounded like the supernet's own plan cache
        self._skeletons: OrderedDict[str, nn.Module] = OrderedDict()

    def forward(self, x: torch.Tensor, arch: Any) -> torch.Tensor:
        plan = self.supernet.plan(arch)
        key = str(self.supernet.parse(arch))
        skeleton = self._skeletons.get(key)
        if skeleton is None:
            skeleton = self._skeletons[key] = with_global_batch_norm(plan.skeleton, self.group)
            if len(self._skeletons) > self.supernet.plan_cache_size:
                self._skeletons.popitem(last=False)
        else:
            self._skeletons.move_to_end(key)
        skeleton.train(self.training)
        return torch.func.functional_call(skeleton, self.supernet.sliced_tensors(arch), (x,))


def wrap(supernet, world: World, device: torch.device) -> nn.Module:
    """The module the training loop calls: the supernet itself on one process, else DDP.

    DDP settings, and why:

    * ``find_unused_parameters=True``: a sub-network touches only part of the supernet
      (shallower stages, fewer channels), so most steps leave parameters without a
      gradient.  DDP then all-reduces a parameter used on any rank and leaves one used on
      none untouched (``grad`` stays ``None``), exactly as one process leaves it, so the
      optimizer skips the same parameters (AdamW would otherwise decay them).
    * The sandwich runs several forward/backward passes per optimizer step; all but the
      last run under ``no_sync()`` (see ``nas.supernet.train``), so gradients accumulate
      locally and the last backward all-reduces the sum once.  DDP records a parameter
      as used when any pass of the ``no_sync`` session used it, so parameters that only
      an earlier member used are reduced too.
    * no buffer broadcast before each forward: running statistics come from the global
      batch on every rank (:func:`global_batch_norm`), so they are equal already;
      broadcasting them from rank 0 would only cost time.  (Construction still
      broadcasts rank 0's parameters and buffers once.)
    """
    if not world.distributed:
        return supernet
    # torch 2.14 renamed broadcast_buffers (deprecated there) to forward_sync_buffers
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return DistributedDataParallel(DistributedSupernet(supernet, world.norm_group),
                                   device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True, **no_buffer_sync)
