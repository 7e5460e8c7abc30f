"""Post-training static int8 quantization of exported ONNX models (ONNX Runtime's tooling).

A search space names the parts of a network that run in int8 as torch module
paths (``blocks.3.1``); the TorchScript ONNX exporter names every node by its
module scope (``/blocks/blocks.3/blocks.3.1/conv_pw/Conv``), so the nodes of
those modules are exactly the nodes under the matching scopes.  Only they are
quantized; the rest of the graph stays float32, with QuantizeLinear /
DequantizeLinear pairs where the precision changes.

The scheme is named by :func:`int8_scheme` (QDQ, uint8 activations, int8
weights per output channel, or per tensor for targets whose int8 kernels take
one weight scale per tensor, activation ranges by moving-average min-max over the
calibration batches, constant 0.01, the rule of PyTorch's
``MovingAverageMinMaxObserver``): u8s8 is what ONNX Runtime's CPU kernels run fastest on
x86 (VNNI/AMX GEMMs; ``s8s8`` activations measured 4x slower here).  Moving
average rather than global min-max because an outlier in any batch otherwise
stretches a range for every input: on the precision benchmark's mbv3 (89.39% fp32) all
layers in int8 scored 88.80% with global min-max, 89.50% with the moving
average (8 batches of 32; percentile 99.99: 89.03%, entropy: 88.80%).  The scheme is written into
fingerprints and model metadata so an int8 number always says which int8 it is.
Per-tensor weights cost accuracy wherever a folded batch norm gives one output
channel a much larger range than the rest (the other channels' weights then
round to a few levels), which is what makes them a per-layer question.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hardware.onnx_io import export_onnx

#: how int8 weights may be scaled: one scale per output channel (the default) or per tensor
WEIGHT_GRANULARITIES = ("per_channel", "per_tensor")

#: activation types: unsigned with a zero point (what ONNX Runtime's CPU kernels run fastest),
#: or signed and symmetric (zero point 0: the only Q/DQ form TensorRT's explicit
#: quantization accepts)
ACTIVATIONS = ("u8", "s8_symmetric")


def int8_scheme(weights: str = "per_channel", activations: str = "u8") -> str:
    """The name of the int8 scheme with ``weights`` scales (:data:`WEIGHT_GRANULARITIES`)
    and ``activations`` (:data:`ACTIVATIONS`)."""
    check_weight_granularity(weights)
    if activations not in ACTIVATIONS:
        raise ValueError(f"int8 activations must be one of {list(ACTIVATIONS)}, got {activations!r}")
    kind = "u8s8" if activations == "u8" else "s8s8-symmetric"
    return f"onnxruntime-qdq-{kind}-{weights.replace('_', '-')}-minmax-moving-average"


def check_weight_granularity(weights: str, key: str = "int8 weights") -> str:
    if weights not in WEIGHT_GRANULARITIES:
        raise ValueError(f"{key} must be one of {list(WEIGHT_GRANULARITIES)}, got {weights!r}")
    return weights


#: what "int8" means for every model this module writes unless told per-tensor
INT8_SCHEME = int8_scheme("per_channel")
#: calibration batches used when a caller has no data (latency only: kernel speed does
#: not depend on the scales, so seeded random inputs are as good as real ones)
SYNTHETIC_CALIBRATION = 4


def module_scope(module_path: str) -> str:
    """ONNX node-name prefix of a torch module path: ``a.b.c`` -> ``/a/a.b/a.b.c/``."""
    parts = module_path.split(".")
    return "/" + "/".join(".".join(parts[:i + 1]) for i in range(len(parts))) + "/"


def nodes_under(model, module_paths: Iterable[str]) -> list[str]:
    """Names of the graph's nodes that belong to any of ``module_paths``."""
    scopes = tuple(module_scope(m) for m in module_paths)
    return [n.name for n in model.graph.node if n.name.startswith(scopes)]


class _ArrayReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of input arrays."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self._feeds = iter([{input_name: np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self):
        return next(self._feeds, None)


def synthetic_calibration(example: np.ndarray, count: int = SYNTHETIC_CALIBRATION,
                          seed: int = 0) -> list[np.ndarray]:
    """Seeded standard-normal batches shaped like ``example`` (for latency measurement)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(example.shape).astype(np.float32) for _ in range(count)]


def quantize_int8(onnx_bytes: bytes, calibration: Sequence[np.ndarray],
                  modules: Sequence[str] | None = None, weights: str = "per_channel",
                  activations: str = "u8") -> bytes:
    """``onnx_bytes`` with the nodes of ``modules`` (every node when ``None``) statically
    quantized to int8 (:func:`int8_scheme` of ``weights`` and ``activations``), calibrated
    on ``calibration`` input batches."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    int8_scheme(weights, activations)  # validates both
    if not calibration:
        raise ValueError("int8 quantization needs at least one calibration batch")
    model = onnx.load_from_string(onnx_bytes)
    nodes = None
    if modules is not None:
        nodes = nodes_under(model, modules)
        if not nodes:
            raise ValueError(f"none of the modules {list(modules)} has a node in the exported graph; "
                             f"the space's precision units do not match its network")
    _inline_initializer_aliases(model)
    onnx_bytes = model.SerializeToString()
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="hwnas-quant-") as tmp:
        source, target = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        source.write_bytes(onnx_bytes)
        # ONNX shape inference (the quantizer needs tensor shapes); graph optimisation is
        # skipped so node names, which carry the module scopes, stay as exported, and the
        # symbolic pass (for dynamic shapes inside transformers) is not needed by these nets
        quant_pre_process(str(source), str(source), skip_optimization=True, skip_symbolic_shape=True)
        quantize_static(str(source), str(target), _ArrayReader(input_name, calibration),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, per_channel=weights == "per_channel",
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=nodes,
                        extra_options={"CalibTensorRangeSymmetric": activations != "u8",
                                       "ActivationSymmetric": activations != "u8", "CalibMovingAverage": True})
        return target.read_bytes()


def _inline_initializer_aliases(model) -> None:
    """Replace ``Identity(initializer)`` nodes by copies of the initializer.

    The exporter de-duplicates equal constants (e.g. two zero biases) and aliases them
    through Identity nodes; the quantizer only quantizes a bias that *is* an
    initializer, and a Conv whose bias it skips stays float.
    """
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = numpy_helper.to_array(initializers[node.input[0]])
            model.graph.initializer.append(numpy_helper.from_array(copy, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def export_quantized(model, example, calibration: Sequence[np.ndarray], modules: Sequence[str] | None = None,
                     weights: str = "per_channel", activations: str = "u8", **export_options) -> bytes:
    """``model`` exported to ONNX (:func:`hardware.onnx_io.export_onnx` with
    ``export_options``) and quantized by :func:`quantize_int8`."""
    return quantize_int8(export_onnx(model, example, **export_options), calibration, modules, weights,
                         activations)


def quantize_node_count(onnx_bytes: bytes) -> int:
    """QuantizeLinear nodes in a model (0: plain float32)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    return sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear")
