"""hardware.remote.validation against the hostile corpus (in-process; the server tests send it too)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from hardware.remote.validation import MAX_SUBGRAPH_DEPTH, check_contents, validate_onnx
from hardware.remote.wire import RequestError
from tests.hardware.remote import corpus

EXTERNAL = ["ext_initializer", "ext_initializer_entries_only", "ext_constant_value", "ext_constant_sparse_values",
            "ext_constant_sparse_indices", "ext_sparse_initializer", "ext_attribute_tensors",
            "ext_attribute_sparse_tensors", "ext_if_subgraph", "ext_subgraph_initializer",
            "ext_nested_loop_in_scan_in_if", "ext_function_body", "ext_training_info"]


def refused(data: bytes, shape=corpus.SHAPE) -> RequestError:
    with pytest.raises(RequestError) as info:
        validate_onnx("m", data, shape)
    return info.value


@pytest.mark.parametrize("name", EXTERNAL)
def test_external_data_is_refused_wherever_it_hides(name):
    error = refused(getattr(corpus, name)())
    assert error.status == 400 and "external data" in error.reason


@pytest.mark.parametrize("name", EXTERNAL)
def test_each_external_case_is_otherwise_acceptable(name, monkeypatch):
    """The control: the same model with its data inline passes the content scan, so the
    refusal above is for the external reference and nothing else."""
    monkeypatch.setattr(corpus, "externalize", lambda tensor, *a, **k: tensor)
    data = getattr(corpus, name)()
    check_contents("m", onnx.load_model_from_string(data), len(data))


def test_the_sparse_value_file_read_is_real_without_the_check(tmp_path, monkeypatch):
    """What the issue reported: ONNX Runtime follows a Constant.sparse_value's external values
    to a file in its working directory.  This is why the server refuses such models and loads
    from bytes in an empty scratch folder."""
    import onnxruntime as ort

    secret = b"TOPSECRETDATA123"
    (tmp_path / corpus.SECRET).write_bytes(secret)
    monkeypatch.chdir(tmp_path)
    session = ort.InferenceSession(corpus.ext_constant_sparse_values(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.zeros(corpus.SHAPE, np.float32)})
    assert out.ravel()[0] == np.frombuffer(secret[:4], np.float32)[0]


@pytest.mark.parametrize("builder", [corpus.custom_domain, corpus.custom_domain_unimported])
def test_custom_domains_are_refused(builder):
    error = refused(builder())
    assert error.status == 400 and "domain 'evil.ops'" in error.reason


def test_model_local_functions_are_allowed(monkeypatch):
    monkeypatch.setattr(corpus, "externalize", lambda tensor, *a, **k: tensor)
    assert validate_onnx("m", corpus.ext_function_body(), corpus.SHAPE) == np.float32


def test_subgraph_depth_is_capped():
    assert validate_onnx("m", corpus.nested_ifs(MAX_SUBGRAPH_DEPTH), corpus.SHAPE) == np.float32
    error = refused(corpus.nested_ifs(MAX_SUBGRAPH_DEPTH + 1))
    assert error.status == 400 and "nests subgraphs deeper" in error.reason
    error = refused(corpus.deep_nesting(2000))  # past protobuf's own parse depth
    assert error.status == 400 and "not an ONNX model" in error.reason


def test_tensor_dims_beyond_the_request_are_refused():
    error = refused(corpus.overflow_tensor_dims())
    assert error.status == 400 and "dims" in error.reason


@pytest.mark.parametrize("name", ["loop_bomb", "scan_bomb", "expand_bomb", "constant_of_shape_bomb",
                                  "runtime_fails"])
def test_resource_bombs_pass_validation(name):
    """Nothing static tells these from real networks: the measuring child's limits stop them."""
    assert validate_onnx("m", getattr(corpus, name)(), corpus.SHAPE) == np.float32


def _cast_model(elem_type: int) -> bytes:
    """One input of ``elem_type`` cast to float: the smallest model taking that input type."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Cast", ["x"], ["y"], to=onnx.TensorProto.FLOAT)], "g",
        [onnx.helper.make_tensor_value_info("x", elem_type, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString()


def test_token_ids_are_an_input_type_and_other_integers_are_not():
    """Token models' graphs take int64 ids (the worker feeds zeros); int32 is refused by name."""
    assert validate_onnx("m", _cast_model(onnx.TensorProto.INT64), (1, 4)) == np.int64
    error = refused(_cast_model(onnx.TensorProto.INT32), shape=(1, 4))
    assert error.status == 400 and "is not float32, float16 or int64" in error.reason
