"""What ``serve-device`` checks in a model before a runtime sees it.

A model may only use what the request carries: every ``TensorProto`` anywhere
in it (initializers, sparse initializers and their values/indices, ``Constant``
``value``/``sparse_value`` attributes, tensor-list attributes, the subgraphs of
``If``/``Loop``/``Scan`` at any depth, model-local function bodies, training
info) is refused if it points at external data, found by walking every
protobuf field rather than a list of known places.  Operators must come from
the standard ONNX domains or from functions defined in the model itself;
subgraphs may nest only :data:`MAX_SUBGRAPH_DEPTH` deep; tensors may not
declare more elements than the request's bytes could hold.  Then
``onnx.checker`` runs, and the single input must match the request's shape.

All of this runs inside the measuring child process (``hardware.remote.worker``),
next to the runtime, never in the serving process.
"""
from __future__ import annotations

import importlib
from typing import Iterator, Sequence

import numpy as np

from hardware.remote.wire import RequestError

#: ONNX TensorProto element types the server accepts as network input
#: input element types a model may take (ONNX TensorProto codes): images, and token ids (int64)
INPUT_DTYPES = {1: np.float32, 10: np.float16, 7: np.int64}
#: operator domains any model may use (others only if the model defines them as functions)
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
#: If/Loop/Scan bodies nested deeper than this are refused
MAX_SUBGRAPH_DEPTH = 8
#: how much of onnx.checker's first line is passed on
_CHECKER_CHARS = 200


def _repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.28
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED


def _messages(root) -> Iterator[tuple[object, int]]:
    """Every protobuf message under ``root`` with its subgraph depth (the main graph is 0, an If
    branch in it 1, ...); iterative, so a deep model cannot exhaust the Python stack."""
    stack = [(root, -1)]
    while stack:
        message, depth = stack.pop()
        if message.DESCRIPTOR.full_name == "onnx.GraphProto":
            depth += 1
        yield message, depth
        for field, value in message.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            for child in (value if _repeated(field) else (value,)):
                stack.append((child, depth))


def _tensor_elements(dims: Sequence[int], cap: int) -> int | None:
    """Product of ``dims`` in Python ints; None if a dim is negative or the product passes ``cap``."""
    count = 1
    for d in dims:
        if d < 0:
            return None
        count *= d
        if count > cap:
            return None
    return count


def preload() -> None:
    """Import ``onnx`` now rather than at the first model.

    ``onnx`` is imported where it is used, so that importing :mod:`hardware`
    (which every client does) does not pay for it: about 1.2 s of CPU.  The
    measuring child calls this at start-up, before it sets its CPU-time
    budget: otherwise the first request after every start was charged for the
    import, and a tight ``--max-cpu-s`` refused it.
    """
    importlib.import_module("onnx")


def check_contents(key: str, model, data_bytes: int) -> None:
    """Refuse external data, foreign operator domains, deep nesting and impossible tensors."""
    import onnx

    functions = {f.domain for f in model.functions}
    allowed = STANDARD_DOMAINS | functions
    for opset in model.opset_import:
        if opset.domain not in allowed:
            raise RequestError(400, f"model {key!r} imports operator domain {opset.domain[:64]!r}; the "
                                    f"server runs only the standard ONNX domains")
    # every tensor holds at least 4 bits (int4) per element, so a tensor claiming more
    # elements than twice the request's bytes cannot carry its data
    tensor_cap = 2 * data_bytes + 64
    for message, depth in _messages(model):
        name = message.DESCRIPTOR.full_name
        if depth > MAX_SUBGRAPH_DEPTH:
            raise RequestError(400, f"model {key!r} nests subgraphs deeper than {MAX_SUBGRAPH_DEPTH} levels")
        if name == "onnx.TensorProto":
            if message.data_location == onnx.TensorProto.EXTERNAL or len(message.external_data):
                raise RequestError(400, f"model {key!r} references external data files; "
                                        f"send a self-contained model")
            if _tensor_elements(message.dims, tensor_cap) is None:
                raise RequestError(400, f"model {key!r} has a tensor whose dims are negative or more than "
                                        f"the request could carry")
        elif name == "onnx.SparseTensorProto":
            if _tensor_elements(message.dims, 1 << 62) is None:
                raise RequestError(400, f"model {key!r} has a sparse tensor with invalid dims")
        elif name == "onnx.NodeProto" and message.domain not in allowed:
            raise RequestError(400, f"model {key!r} uses an operator of domain {message.domain[:64]!r}; "
                                    f"the server runs only the standard ONNX domains")


def validate_onnx(key: str, data: bytes, input_shape: Sequence[int]) -> np.dtype:
    """Check ``data`` is a self-contained ONNX model whose one input has ``input_shape``.

    Returns the input's numpy dtype; raises :class:`RequestError` (400) naming the model."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, recursion limits, bad UTF-8: all the client's
        raise RequestError(400, f"model {key!r} is not an ONNX model (it does not parse as ModelProto)") from None
    if not model.graph.node:
        raise RequestError(400, f"model {key!r} is not an ONNX model: it has no graph nodes")
    check_contents(key, model, len(data))
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, ValueError, RuntimeError
        # the checker only reads the request's own model (external data is refused above)
        text = str(exc).strip()
        first = text.splitlines()[0][:_CHECKER_CHARS] if text else type(exc).__name__
        raise RequestError(400, f"model {key!r} failed onnx.checker: {first}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise RequestError(400, f"model {key!r} must have exactly one input, has {len(inputs)}")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type not in INPUT_DTYPES:
        raise RequestError(400, f"model {key!r}: input element type {tensor_type.elem_type} "
                                f"is not float32, float16 or int64")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if len(dims) != len(input_shape) or any(d is not None and d != s for d, s in zip(dims, input_shape)):
        shown = ["?" if d is None else d for d in dims[:8]]
        raise RequestError(400, f"model {key!r}: input shape {list(input_shape)} does not match "
                                f"the model's {shown}")
    return np.dtype(INPUT_DTYPES[tensor_type.elem_type])
