"""Weight-sharing supernets: one set of weights, every architecture of a space.

How an architecture is activated (once-for-all style elastic layers)
---------------------------------------------------------------------
* The supernet holds the network of the space's *largest* choice per layer
  (deepest stages, largest kernel, expansion and width).
* For an architecture, ``space.build(arch)`` is instantiated once on the
  ``meta`` device: a *skeleton* with the right module code and tensor shapes
  but no memory and no initialisation (cheap, and it never touches an RNG).
  Its constructors' initialisers are skipped (:func:`build_skeleton`): a new
  skeleton is built for every random sub-network of every training step.
* Each skeleton tensor is a *slice* of the matching supernet tensor: the
  leading channels of every dimension (elastic expansion and width by channel
  slicing, as in OFA) and the centre of the spatial dimensions (elastic kernel
  by centre-cropping the largest kernel; OFA's kernel transform matrices are
  not used).  Elastic depth keeps the first ``d`` layers of a stage, and
  elastic resolution is just the input size.
* The forward pass is ``torch.func.functional_call(skeleton, slices, x)``.

The slices are views, so gradients and batch-norm running statistics land in
the shared weights.  Because the skeleton *is* the stand-alone module,
:meth:`Supernet.extract` (the same slices copied into ``space.build(arch)``)
computes exactly what the active supernet path computes.

This module is the space-independent engine.  A space gets a supernet by
subclassing :class:`Supernet` (largest/smallest architecture, the holder
modules, the name map from stand-alone parameter names to supernet names) and
registering it in ``SUPERNETS`` under the space name; the built-in adapters
live in :mod:`nas.supernet.adapters` (one module per space), which
``nas/supernet/__init__.py`` imports, so importing any ``nas.supernet`` module
registers them.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nas.registry import Registry


class _SkipInPlaceWritesOnMeta(TorchDispatchMode):
    """Turns in-place writes to meta tensors into no-ops.

    A meta tensor holds no data, so the initialisers a module runs in its
    constructor (``reset_parameters``, timm's ``_init_weight_goog``) change
    nothing on one, yet torch still runs their decompositions in Python: they
    were 40% of building an mbv3 skeleton (``benchmarks/supernet_step.py``: 70
    ms before, 42 ms now; mbv3 supernet epochs 1.15x faster).  Ops that change
    a tensor's shape or strides (``resize_``, ``set_``, in-place views; torch
    tags them ``inplace_view``) still run, so every tensor keeps the shape the
    module gave it.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        schema = func._schema
        if (schema.name.endswith("_") and args and isinstance(args[0], torch.Tensor) and args[0].is_meta
                and schema.arguments[0].alias_info is not None and schema.arguments[0].alias_info.is_write
                and torch.Tag.inplace_view not in func.tags):
            return args[0]
        return func(*args, **(kwargs or {}))


def build_skeleton(space, arch: Any) -> nn.Module:
    """``space.build(arch)`` on the meta device, without running its initialisers.

    Only the module code and tensor shapes are used: :meth:`Supernet.forward`
    substitutes every tensor, and :meth:`Supernet.extract` allocates and fills
    them all.
    """
    with torch.device("meta"), _SkipInPlaceWritesOnMeta():
        return space.build(arch)


@dataclass
class _Plan:
    """How one architecture is cut out of the supernet."""

    skeleton: nn.Module  # space.build(arch) on the meta device
    # (stand-alone name, supernet name, index) for every parameter and buffer
    slices: list[tuple[str, str, tuple]]


def slice_index(sub_shape: torch.Size, super_shape: torch.Size, name: str) -> tuple:
    """Index that cuts a ``sub_shape`` tensor out of a ``super_shape`` one.

    Leading channels for every dimension except the spatial dimensions of a
    4-d convolution weight, which are centre-cropped (kernel ``k`` sits in the
    middle of the largest kernel ``K``; both odd).
    """
    if len(sub_shape) != len(super_shape):
        raise ValueError(f"{name}: rank {len(sub_shape)} does not match the supernet's "
                         f"{len(super_shape)}")
    index = []
    for dim, (want, have) in enumerate(zip(sub_shape, super_shape)):
        if want > have:
            raise ValueError(f"{name}: needs shape {tuple(sub_shape)}, the supernet holds only "
                             f"{tuple(super_shape)}")
        if len(sub_shape) == 4 and dim >= 2:
            if (have - want) % 2:
                raise ValueError(f"{name}: kernel {want} cannot be centre-cropped from {have}")
            start = (have - want) // 2
            index.append(slice(start, start + want))
        else:
            index.append(slice(0, want))
    return tuple(index)


class Supernet(nn.Module):
    """Base class; subclasses hold the largest network and name their tensors."""

    #: the search-space registry name this supernet serves
    space_name: str = ""
    #: architectures whose skeleton/slice plan is kept (largest and smallest recur every step)
    plan_cache_size: int = 64
    #: version of the tensor names and shapes; a subclass bumps it when they change, so a
    #: checkpoint of the older layout is refused by name rather than by missing keys
    layout: int = 1
    #: whether the space offers several block types per layer whose weights may be shared
    #: (``share_block_types``); a space with one block type has nothing to keep apart
    has_block_types: bool = False

    def __init__(self, space, share_block_types: bool = True):
        super().__init__()
        if space.name != self.space_name:
            raise ValueError(f"{type(self).__name__} serves space {self.space_name!r}, got {space.name!r}")
        self.check_options(share_block_types)
        self.space = space
        self.share_block_types = share_block_types
        self._plans: OrderedDict[str, _Plan] = OrderedDict()

    @classmethod
    def check_options(cls, share_block_types: bool) -> None:
        """Refuse options this supernet cannot honour (the recipe loader asks before training)."""
        if not share_block_types and not cls.has_block_types:
            raise ValueError(f"supernet.share_block_types: false: the {cls.space_name} supernet has one block "
                             "type per layer, so there is nothing to keep apart")

    # --- what a subclass provides ---------------------------------------------------
    def largest(self) -> Any:
        """The architecture with the largest choice everywhere (the distillation teacher)."""
        raise NotImplementedError

    def smallest(self) -> Any:
        """The architecture with the smallest choice everywhere."""
        raise NotImplementedError

    def super_name(self, arch: Any, name: str) -> str:
        """Supernet tensor name for the stand-alone tensor ``name`` of ``arch``."""
        raise NotImplementedError

    def residual_blocks(self) -> list[nn.Module]:
        """Blocks that have an identity shortcut in *every* sub-network."""
        return []

    def init_for_training(self) -> None:
        """BigNAS-style initialisation for stable weight-sharing training.

        The last batch-norm scale of every always-residual block starts at zero
        (each such block starts as the identity, so any depth is a well-behaved
        network from step one), and the classifier starts small (timm's
        ImageNet init gives large logits for few classes).  Without these, the
        summed sandwich gradients blow the losses up during the first epoch.
        """
        for block in self.residual_blocks():
            norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            if norms:
                nn.init.zeros_(norms[-1].weight)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    # --- activation -----------------------------------------------------------------
    def parse(self, arch: Any) -> Any:
        """Accept an architecture object or its canonical string."""
        return self.space.parse(arch) if isinstance(arch, str) else arch

    def plan(self, arch: Any) -> _Plan:
        arch = self.parse(arch)
        key = str(arch)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        if not self.space.contains(arch):
            raise ValueError(f"architecture {key} is not in the supernet's space {self.space!r}")
        skeleton = build_skeleton(self.space, arch)
        own = self._own_tensors()
        slices = []
        for name, tensor in _tensors(skeleton).items():
            target = self.super_name(arch, name)
            if target not in own:
                raise ValueError(f"{key}: tensor {name!r} maps to {target!r}, which the supernet lacks")
            slices.append((name, target, slice_index(tensor.shape, own[target].shape, name)))
        plan = _Plan(skeleton, slices)
        self._plans[key] = plan
        if len(self._plans) > self.plan_cache_size:
            self._plans.popitem(last=False)
        return plan

    def sliced_tensors(self, arch: Any) -> dict[str, torch.Tensor]:
        """Stand-alone name -> view into the shared weights, for ``arch``."""
        own = self._own_tensors()
        out = {}
        for name, target, index in self.plan(arch).slices:
            tensor = own[target]
            # 0-d buffers (num_batches_tracked) are shared as they are
            out[name] = tensor[index] if tensor.dim() else tensor
        return out

    def forward(self, x: torch.Tensor, arch: Any) -> torch.Tensor:
        plan = self.plan(arch)
        plan.skeleton.train(self.training)
        return torch.func.functional_call(plan.skeleton, self.sliced_tensors(arch), (x,))

    def extract(self, arch: Any) -> nn.Module:
        """A stand-alone ``space.build(arch)`` holding copies of the inherited weights."""
        arch = self.parse(arch)
        tensors = self.sliced_tensors(arch)
        model = build_skeleton(self.space, arch)
        # to_empty allocates without initialising; strict loading then fills every tensor
        device = next(iter(tensors.values())).device
        model = model.to_empty(device=device)
        model.load_state_dict({k: v.detach().clone() for k, v in tensors.items()}, strict=True)
        return model.eval()

    def _own_tensors(self) -> dict[str, torch.Tensor]:
        return _tensors(self)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return tensors


SUPERNETS: Registry[type[Supernet]] = Registry("supernet")


def build_supernet(space, seed: int = 0, share_block_types: bool = True) -> Supernet:
    """The supernet for ``space``, initialised from ``seed`` only.

    ``share_block_types``: where a layer offers several block types, whether they share
    their convolutions (see the space's adapter) or each keeps its own.

    Module initialisers draw from torch's global generator; forking it keeps
    the caller's RNG state untouched.
    """
    cls = SUPERNETS.get(space.name)
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        supernet = cls(space, share_block_types=share_block_types)
        supernet.init_for_training()
        return supernet
