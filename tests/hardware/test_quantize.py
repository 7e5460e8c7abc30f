"""Post-training int8 quantization of exported networks (ONNX Runtime's tooling): which
nodes are quantized.  Agreement of a trained network's int8 and fp32 outputs is tested in
``tests/nas/test_precision.py``, where a network is trained."""
import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from hardware.onnx_io import export_onnx, ort_session
from hardware.quantize import module_scope, nodes_under, quantize_int8, quantize_node_count, synthetic_calibration
from search_spaces import make_space


@pytest.fixture(scope="module")
def network():
    space = make_space("mbv3", resolutions=[32], widths=[1.0], num_classes=10, precisions=["fp32", "int8"])
    arch = space.float_arch(space.sample(np.random.default_rng(0)))
    torch.manual_seed(0)
    model = space.build(arch)
    example = space.example_input(arch)
    return space, arch, model, export_onnx(model, example), example


def test_module_scope_matches_the_exporters_node_names(network):
    space, arch, model, data, _ = network
    assert module_scope("blocks.3.1") == "/blocks/blocks.3/blocks.3.1/"
    graph = onnx.load_from_string(data)
    for unit in space.precision_units(arch).values():
        assert nodes_under(graph, unit.modules), unit


def test_whole_network_quantization_keeps_the_graphs_interface(network):
    _, _, _, data, example = network
    quantized = quantize_int8(data, synthetic_calibration(example.numpy(), count=2))
    assert quantize_node_count(quantized) > 10 and quantize_node_count(data) == 0
    session = ort_session(quantized)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert session.run(None, {"input": example.numpy()})[0].shape == (1, 10)


def test_only_the_named_modules_are_quantized(network):
    space, arch, _, data, example = network
    unit = space.precision_units(arch)["head"]
    quantized = onnx.load_from_string(quantize_int8(data, synthetic_calibration(example.numpy()), unit.modules))
    scopes = tuple(module_scope(m) for m in unit.modules)
    compute = [n for n in quantized.graph.node if n.op_type in ("Conv", "Gemm")]
    fed_by_dequantize = {o for n in quantized.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in compute:
        quantized_input = node.input[0] in fed_by_dequantize
        assert quantized_input == node.name.startswith(scopes), node.name


def test_modules_without_nodes_are_an_error(network):
    _, _, _, data, example = network
    with pytest.raises(ValueError, match="has a node in the exported graph"):
        quantize_int8(data, synthetic_calibration(example.numpy()), ["not_a_module"])
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(data, [], None)


def weight_scale_sizes(data: bytes) -> set[int]:
    """Sizes of the scales of the quantized convolution kernels (1: one scale per tensor)."""
    graph = onnx.load_from_string(data).graph
    initializers = {i.name: i for i in graph.initializer}
    sizes = set()
    for node in graph.node:
        # a kernel's DequantizeLinear reads an int8 initializer; its scale has one entry per channel or one
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers \
                and initializers[node.input[0]].data_type == onnx.TensorProto.INT8 \
                and len(initializers[node.input[0]].dims) == 4:
            sizes.add(int(np.prod(initializers[node.input[1]].dims)))
    return sizes


def test_weight_scales_per_channel_or_per_tensor(network):
    space, arch, model, data, example = network
    calibration = synthetic_calibration(example.numpy())
    per_channel = quantize_int8(data, calibration)
    per_tensor = quantize_int8(data, calibration, weights="per_tensor")
    assert max(weight_scale_sizes(per_channel)) > 1
    assert weight_scale_sizes(per_tensor) == {1}
    feed = {ort_session(data).get_inputs()[0].name: example.numpy()}
    reference = ort_session(data).run(None, feed)[0]
    for quantized in (per_channel, per_tensor):
        assert ort_session(quantized).run(None, feed)[0].shape == reference.shape
    with pytest.raises(ValueError, match="int8 weights must be one of"):
        quantize_int8(data, calibration, weights="per_row")


def test_symmetric_int8_activations_have_zero_points_of_zero(network):
    # the form TensorRT's explicit quantization accepts: int8 activations, zero point 0
    space, arch, model, data, example = network
    quantized = quantize_int8(data, synthetic_calibration(example.numpy()), activations="s8_symmetric")
    graph = onnx.load_from_string(quantized).graph
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    zero_points = [initializers[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    feed = {ort_session(data).get_inputs()[0].name: example.numpy()}
    assert ort_session(quantized).run(None, feed)[0].shape == ort_session(data).run(None, feed)[0].shape
    with pytest.raises(ValueError, match="int8 activations must be one of"):
        quantize_int8(data, synthetic_calibration(example.numpy()), activations="u4")

