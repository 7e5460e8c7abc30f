"""The two graphs a runtime times for a token model, each a module with one integer input,
so any runner (ONNX Runtime here, ``serve-device``, a farm agent, PyTorch) times them as
it times a network:

* prefill: the model itself over a ``[batch, prompt_len]`` prompt (:func:`prompt_tokens`);
* decode: :class:`DecodeStep`, one cached step at ``context`` tokens, on a ``[batch]`` token.

:class:`DecodeStep` holds a synthetic cache (:meth:`HybridLM.synthetic_cache`: random
contents, the size decoding at ``context`` has) as buffers, which an ONNX export turns into
initializers, and each call steps a *copy* of it.  The module is therefore a pure function of
the token: its exported graph gives ``HybridLM.step``'s logits on that cache, and every timed
call costs the same, where stepping a live cache would grow the context with each call.  The
copy is what an ONNX graph does anyway (its cache update writes a new tensor); the cost of a
step is dominated by reading the cache, which both do once.

Token ids are zeros: cost does not depend on them, and id 0 exists in every vocabulary.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from search_spaces.slm.model import Cache


def prompt_tokens(batch: int, prompt_len: int) -> torch.Tensor:
    """The prefill graph's input: ``[batch, prompt_len]`` token ids."""
    return torch.zeros(batch, prompt_len, dtype=torch.long)


def decode_token(batch: int) -> torch.Tensor:
    """The decode graph's input: one token id per sequence, ``[batch]``."""
    return torch.zeros(batch, dtype=torch.long)


class DecodeStep(nn.Module):
    """``model``'s decode step at ``context`` cached tokens, as a function of the token."""

    def __init__(self, model: nn.Module, batch: int, context: int, seed: int = 0):
        super().__init__()
        self.model = model.eval()
        # room=1: the step writes one slot past the context, and nothing ever grows
        cache = model.synthetic_cache(batch, context, torch.Generator().manual_seed(seed), room=1)
        self.pos, self.batch = cache.pos, cache.batch
        #: per layer: (the state with its tensors, names of the buffers holding them); FFNs have none
        self.layout: list[tuple[object, dict[str, str]]] = []
        for i, state in enumerate(cache.states):
            buffers = {}
            if state is not None:
                for attr, value in vars(state).items():
                    if isinstance(value, torch.Tensor):
                        buffers[attr] = f"state{i}_{attr}"
                        self.register_buffer(buffers[attr], value)
            self.layout.append((state, buffers))

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        states = []
        for state, buffers in self.layout:
            if state is not None:
                state = copy.copy(state)
                for attr, name in buffers.items():
                    setattr(state, attr, getattr(self, name).clone())
            states.append(state)
        return self.model.step(token, Cache(states, self.pos, self.batch))
