"""Hostile ONNX models for ``serve-device``, built with ``onnx.helper``.

Every builder returns serialized model bytes whose single input is ``x`` of
:data:`SHAPE` (float32), so the request header is always valid and the model
itself is what the server must refuse or survive.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPE = (1, 3, 32, 32)
OPSET = 17
#: the file name external-data references point at (tests create it next to the server)
SECRET = "secret.bin"


def _io():
    return ([helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["d0", "d1", "d2", "d3"])])


def _model(nodes, initializer=(), sparse_initializer=(), functions=(), domains=(), training_info=()) -> onnx.ModelProto:
    inputs, outputs = _io()
    graph = helper.make_graph(list(nodes), "hostile", inputs, outputs, initializer=list(initializer),
                              sparse_initializer=list(sparse_initializer))
    opsets = [helper.make_opsetid("", OPSET), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8
    for info in training_info:
        model.training_info.append(info)
    return model


def _bytes(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString()


def externalize(tensor: TensorProto, location: str = SECRET, flag: bool = True) -> TensorProto:
    """Point ``tensor`` at external data (``flag``: also set data_location=EXTERNAL)."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    if flag:
        tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "8")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _float(name: str, shape=(1,)) -> TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _int64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _sparse(name: str, values_external=False, indices_external=False):
    values = numpy_helper.from_array(np.ones(2, np.float32), name)
    indices = numpy_helper.from_array(np.array([0, 1], np.int64), name + "_indices")
    if values_external:
        externalize(values)
    if indices_external:
        externalize(indices)
    return helper.make_sparse_tensor(values, indices, [8])


def _add_w(w_name="w"):
    return helper.make_node("Add", ["x", w_name], ["y"])


# --- external data, in every place ONNX allows it --------------------------------------------
def ext_initializer() -> bytes:
    return _bytes(_model([_add_w()], initializer=[externalize(_float("w"))]))


def ext_initializer_entries_only() -> bytes:
    """external_data entries without data_location=EXTERNAL (a lax runtime may still follow them)."""
    return _bytes(_model([_add_w()], initializer=[externalize(_float("w"), flag=False)]))


def ext_constant_value() -> bytes:
    const = helper.make_node("Constant", [], ["w"], value=externalize(_float("c")))
    return _bytes(_model([const, _add_w()]))


def ext_constant_sparse_values() -> bytes:
    """The issue's file read: Constant.sparse_value whose values live in a file, gathered."""
    const = helper.make_node("Constant", [], ["s"], sparse_value=_sparse("s", values_external=True))
    gather = helper.make_node("Gather", ["s", "i"], ["g"])
    add = helper.make_node("Add", ["x", "g"], ["y"])
    return _bytes(_model([const, gather, add], initializer=[_int64("i", [0])]))


def ext_constant_sparse_indices() -> bytes:
    const = helper.make_node("Constant", [], ["s"], sparse_value=_sparse("s", indices_external=True))
    return _bytes(_model([const, helper.make_node("Identity", ["x"], ["y"])]))


def ext_sparse_initializer() -> bytes:
    sparse = _sparse("s", values_external=True, indices_external=True)
    return _bytes(_model([helper.make_node("Identity", ["x"], ["y"])], sparse_initializer=[sparse]))


def ext_attribute_tensors() -> bytes:
    """A TENSORS-typed attribute (no standard op has one; the scan must find it anyway)."""
    node = helper.make_node("Identity", ["x"], ["y"])
    node.attribute.append(helper.make_attribute("t", [externalize(_float("a")), _float("b")]))
    return _bytes(_model([node]))


def ext_attribute_sparse_tensors() -> bytes:
    node = helper.make_node("Identity", ["x"], ["y"])
    node.attribute.append(helper.make_attribute("s", [_sparse("a", values_external=True)]))
    return _bytes(_model([node]))


def _branch(nodes, out="o", initializer=()):
    return helper.make_graph(list(nodes), "branch", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1])],
                             initializer=list(initializer))


def _if(then_graph, else_graph, out="y") -> list:
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
    return [cond, helper.make_node("If", ["cond"], [out], then_branch=then_graph, else_branch=else_graph)]


def ext_if_subgraph() -> bytes:
    then = _branch([helper.make_node("Constant", [], ["o"], value=externalize(_float("c")))])
    other = _branch([helper.make_node("Identity", ["x"], ["o"])])
    return _bytes(_model(_if(then, other)))


def ext_subgraph_initializer() -> bytes:
    then = _branch([helper.make_node("Identity", ["w"], ["o"])], initializer=[externalize(_float("w"))])
    other = _branch([helper.make_node("Identity", ["x"], ["o"])])
    return _bytes(_model(_if(then, other)))


def ext_nested_loop_in_scan_in_if() -> bytes:
    """If -> Scan body -> Loop body -> Constant with external data (depth 4)."""
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Constant", [], ["v"], value=externalize(_float("e"))),
         helper.make_node("Add", ["s_in", "v"], ["s_out"])],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [1])])
    scan_body = helper.make_graph(
        [helper.make_node("Constant", [], ["trip"], value=helper.make_tensor("t", TensorProto.INT64, [], [2])),
         helper.make_node("Constant", [], ["go"], value=helper.make_tensor("g", TensorProto.BOOL, [], [True])),
         helper.make_node("Loop", ["trip", "go", "acc_in"], ["acc_out"], body=loop_body),
         helper.make_node("Identity", ["acc_out"], ["elem_out"])],
        "scan_body",
        [helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("elem", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("elem_out", TensorProto.FLOAT, [1])])
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["init"], value=_float("init0")),
         helper.make_node("Constant", [], ["seq"], value=_float("seq0", (4, 1))),
         helper.make_node("Scan", ["init", "seq"], ["o", "ys"], body=scan_body, num_scan_inputs=1)],
        "then", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])])
    other = _branch([helper.make_node("Constant", [], ["o"], value=_float("one"))])
    nodes = _if(then, other, out="z") + [helper.make_node("Add", ["x", "z"], ["y"])]
    return _bytes(_model(nodes))


def ext_function_body() -> bytes:
    body = [helper.make_node("Constant", [], ["c"], value=externalize(_float("c"))),
            helper.make_node("Add", ["a", "c"], ["b"])]
    function = helper.make_function("local.fn", "AddSecret", ["a"], ["b"], body,
                                    [helper.make_opsetid("", OPSET)])
    node = helper.make_node("AddSecret", ["x"], ["y"], domain="local.fn")
    return _bytes(_model([node], functions=[function], domains=["local.fn"]))


def ext_training_info() -> bytes:
    init = helper.make_graph([helper.make_node("Constant", [], ["w2"], value=externalize(_float("c")))],
                             "init", [], [helper.make_tensor_value_info("w2", TensorProto.FLOAT, None)])
    info = helper.make_training_info(algorithm=helper.make_graph([], "algo", [], []), algorithm_bindings=[],
                                     initialization=init, initialization_bindings=[])
    return _bytes(_model([helper.make_node("Identity", ["x"], ["y"])], training_info=[info]))


# --- holding the device ----------------------------------------------------------------------
def loop_bomb(trips: int = 10 ** 12) -> bytes:
    """A few hundred bytes that loop ``trips`` times (the issue's device hold)."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Add", ["s_in", "one"], ["s_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_in", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, list(SHAPE))],
        initializer=[_float("one")])
    nodes = [helper.make_node("Constant", [], ["trip"], value=helper.make_tensor("t", TensorProto.INT64, [], [trips])),
             helper.make_node("Constant", [], ["go"], value=helper.make_tensor("g", TensorProto.BOOL, [], [True])),
             helper.make_node("Loop", ["trip", "go", "x"], ["y"], body=body)]
    return _bytes(_model(nodes))


def scan_bomb(steps: int = 10 ** 7) -> bytes:
    """Scan over ``steps`` rows made in-graph by ConstantOfShape (40 MB, then ~10^7 body runs)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
         helper.make_node("Identity", ["row"], ["row_out"])],
        "scan_body",
        [helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("row", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("row_out", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("ConstantOfShape", ["rows_shape"], ["rows"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Reshape", ["m", "one_shape"], ["init"]),
             helper.make_node("Scan", ["init", "rows"], ["acc", "rows_out"], body=body, num_scan_inputs=1),
             helper.make_node("Add", ["x", "acc"], ["y"])]
    return _bytes(_model(nodes, initializer=[_int64("rows_shape", [steps, 1]), _int64("one_shape", [1])]))


def expand_bomb(rows: int = 1 << 20) -> bytes:
    """Expand the input to ``rows`` x 3 x 32 x 32 floats (12 GB at 2^20) at run time."""
    return _bytes(_model([helper.make_node("Expand", ["x", "shape"], ["y"])],
                         initializer=[_int64("shape", [rows, *SHAPE[1:]])]))


def constant_of_shape_bomb(elements: int = 1 << 32) -> bytes:
    """A 16 GB constant the runtime may try to fold while loading."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    return _bytes(_model(nodes, initializer=[_int64("shape", [elements])]))


# --- structure ----------------------------------------------------------------------------
def custom_domain() -> bytes:
    return _bytes(_model([helper.make_node("ReadFile", ["x"], ["y"], domain="evil.ops")], domains=["evil.ops"]))


def custom_domain_unimported() -> bytes:
    return _bytes(_model([helper.make_node("ReadFile", ["x"], ["y"], domain="evil.ops")]))


def nested_ifs(depth: int) -> bytes:
    """``depth`` If nodes, each in the previous one's then-branch."""
    inner = _branch([helper.make_node("Constant", [], ["o"], value=_float("leaf"))])
    for level in range(depth - 1):
        cond = helper.make_node("Constant", [], [f"c{level}"],
                                value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
        other = _branch([helper.make_node("Constant", [], ["o"], value=_float("other"))])
        inner = _branch([cond, helper.make_node("If", [f"c{level}"], ["o"], then_branch=inner, else_branch=other)])
    nodes = _if(inner, _branch([helper.make_node("Constant", [], ["o"], value=_float("top"))]), out="z")
    return _bytes(_model(nodes + [helper.make_node("Add", ["x", "z"], ["y"])]))


def overflow_tensor_dims() -> bytes:
    """An initializer whose dims multiply past 2^63 while it carries 4 bytes."""
    w = _float("w")
    del w.dims[:]
    w.dims.extend([2 ** 62, 2 ** 62])
    return _bytes(_model([_add_w()], initializer=[w]))


def runtime_fails() -> bytes:
    """Passes onnx.checker; ONNX Runtime fails when it runs (Reshape to an impossible shape)."""
    return _bytes(_model([helper.make_node("Reshape", ["x", "s"], ["y"])], initializer=[_int64("s", [7, 11])]))


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_nesting(depth: int = 2000) -> bytes:
    """Graph -> If node -> then_branch graph -> ... ``depth`` times, written byte by byte (onnx.helper
    itself cannot build it: protobuf refuses to parse such depth, which is the point)."""
    graph = _field(1, _field(4, b"Identity"))  # GraphProto.node { op_type }
    for _ in range(depth):
        attribute = _field(1, b"then_branch") + bytes([20 << 3, 5]) + _field(6, graph)  # name, type=GRAPH, g
        graph = _field(1, _field(4, b"If") + _field(5, attribute))  # node { op_type, attribute }
    opset = _field(8, _field(1, b"") + bytes([2 << 3, OPSET]))  # opset_import { domain, version }
    return bytes([1 << 3, 8]) + _field(7, graph) + opset  # ir_version, graph
