#!/usr/bin/python3
"""Tiny hand-made ONNX models for the loader's error tests and fuzz seeds.

    /usr/bin/python3 tools/make_fuzz_seeds.py            # writes both folders

Writes
  tests/data/onnx/*.onnx             models the unit tests load on purpose
                                     (unsupported op, non-4-D input, a valid
                                     tiny conv net and the same with a fixed
                                     batch of 2, ...), each a few KB;
  tests/fuzz/corpus/fuzz_onnx/*.onnx seeds for fuzz_onnx: small valid graphs
                                     that reach every loader branch and many of
                                     the engine's ops (the fuzzer mutates from
                                     them), plus a few broken ones;
  tests/fuzz/regressions/*.onnx      adversarial graphs (valid protobuf, broken
                                     semantics) that test_engine.c must survive;
                                     the fuzzer's own finds live there too.

Deterministic: weights come from a fixed-seed numpy generator, so a rerun
gives byte-identical files.  Needs Debian's python3-onnx (onnx 1.12) and numpy.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "onnx")
SEEDS = os.path.join(ROOT, "tests", "fuzz", "corpus", "fuzz_onnx")
REGRESSIONS = os.path.join(ROOT, "tests", "fuzz", "regressions")

rng = np.random.default_rng(20261127)
F = TensorProto.FLOAT


def w(name, *shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def i64(name, vals):
    return numpy_helper.from_array(np.array(vals, dtype=np.int64), name)


def f32(name, vals):
    return numpy_helper.from_array(np.array(vals, dtype=np.float32), name)


def model(nodes, inits, inp=("input", ["N", 3, 8, 8]), out=("logits", ["N", 4]), opset=13,
          check=True, meta=None, value_info=()):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(inp[0], F, inp[1])],
        [helper.make_tensor_value_info(out[0], F, out[1])],
        initializer=inits, value_info=list(value_info))
    m = helper.make_model(g, producer_name="make_fuzz_seeds",
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    if meta:
        for k, v in meta.items():
            e = m.metadata_props.add()
            e.key, e.value = k, v
    if check:
        onnx.checker.check_model(m)
    return m


def head(x, c, classes=4, prefix="h"):
    """GlobalAveragePool → Flatten → Gemm(transB) producing 'logits'."""
    nodes = [
        helper.make_node("GlobalAveragePool", [x], [prefix + "_gap"], name=prefix + "_gap"),
        helper.make_node("Flatten", [prefix + "_gap"], [prefix + "_flat"], name=prefix + "_flatten", axis=1),
        helper.make_node("Gemm", [prefix + "_flat", prefix + "_fc_w", prefix + "_fc_b"], ["logits"],
                         name=prefix + "_fc", transB=1),
    ]
    return nodes, [w(prefix + "_fc_w", classes, c), w(prefix + "_fc_b", classes)]


def tiny_conv():
    """Conv → BN → Relu → MaxPool → Conv → Relu → GAP → Flatten → Gemm; dynamic batch."""
    nodes = [
        helper.make_node("Conv", ["input", "c1_w", "c1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn1"],
                         name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2_w"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["feat"], name="relu2"),
    ]
    h, hi = head("feat", 6)
    v = np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5
    inits = [w("c1_w", 4, 3, 3, 3), w("c1_b", 4), w("bn_g", 4), w("bn_b", 4), w("bn_m", 4),
             numpy_helper.from_array(v, "bn_v"), w("c2_w", 6, 4, 3, 3)] + hi
    return model(nodes + h, inits, meta={"camserve.note": "tiny conv net for tests"})


def residual_clip():
    """MobileNetV2-style: depthwise conv, Clip with initializer min/max, residual Add."""
    nodes = [
        helper.make_node("Conv", ["input", "c1_w", "c1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "cmin", "cmax"], ["a1"], name="clip1"),
        helper.make_node("Conv", ["a1", "dw_w", "dw_b"], ["dw"], name="dwconv", group=4,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["dw", "cmin", "cmax"], ["a2"], name="clip2"),
        helper.make_node("Conv", ["a2", "pw_w"], ["pw"], name="pwconv"),
        helper.make_node("Add", ["pw", "a1"], ["sum"], name="add"),
        helper.make_node("Sigmoid", ["sum"], ["sg"], name="sig"),
        helper.make_node("Mul", ["sum", "sg"], ["feat"], name="swish"),
    ]
    h, hi = head("feat", 4)
    inits = [w("c1_w", 4, 3, 3, 3), w("c1_b", 4), f32("cmin", 0.0), f32("cmax", 6.0),
             w("dw_w", 4, 1, 3, 3), w("dw_b", 4), w("pw_w", 4, 4, 1, 1)] + hi
    return model(nodes + h, inits)


def shuffle():
    """ShuffleNet-style channel split / shuffle with Split, Reshape 5-D, Transpose, Concat."""
    nodes = [
        helper.make_node("Conv", ["input", "c1_w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Split", ["r1"], ["s1", "s2"], name="split", axis=1, split=[2, 2]),
        helper.make_node("Conv", ["s2", "c2_w"], ["c2"], name="conv2"),
        helper.make_node("Concat", ["s1", "c2"], ["cat"], name="concat", axis=1),
        helper.make_node("Reshape", ["cat", "shp5"], ["r5"], name="reshape5"),
        helper.make_node("Transpose", ["r5"], ["t5"], name="transpose", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t5", "shp4"], ["feat"], name="reshape4"),
    ]
    h, hi = head("feat", 4)
    inits = [w("c1_w", 4, 3, 3, 3), w("c2_w", 2, 2, 1, 1), i64("shp5", [1, 2, 2, 8, 8]),
             i64("shp4", [1, 4, 8, 8])] + hi
    return model(nodes + h, inits, inp=("input", [1, 3, 8, 8]), out=("logits", [1, 4]), opset=12)


def dynamic_flatten():
    """torch.onnx's dynamic flatten: Shape → Gather → Unsqueeze → Concat → Reshape,
    plus a Constant node, AveragePool, Pad and Softmax."""
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["pad"], name="pad", mode="constant"),
        helper.make_node("Conv", ["pad", "c1_w"], ["c1"], name="conv1"),
        helper.make_node("LeakyRelu", ["c1"], ["r1"], name="lrelu", alpha=0.1),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="avgpool", kernel_shape=[8, 8]),
        helper.make_node("Shape", ["p1"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["zero"], name="const0",
                         value=helper.make_tensor("zero_t", TensorProto.INT64, [], [0])),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Reshape", ["p1", "newshape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], name="fc", transB=1),
        helper.make_node("Softmax", ["fc"], ["logits"], name="softmax", axis=1),
    ]
    inits = [i64("pads", [0, 0, 1, 1, 0, 0, 1, 1]), w("c1_w", 4, 3, 3, 3), i64("axes0", [0]),
             i64("minus1", [-1]), w("fc_w", 4, 4), w("fc_b", 4)]
    return model(nodes, inits)


def unsupported_op():
    """A valid graph with one node of an op type nobody implements ("Foo")."""
    nodes = [
        helper.make_node("Conv", ["input", "c1_w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Foo", ["c1"], ["foo"], name="my_foo_node"),
    ]
    h, hi = head("foo", 4)
    return model(nodes + h, [w("c1_w", 4, 3, 3, 3)] + hi, check=False)


def input_2d():
    """An MLP: input [N, 16] (not an image)."""
    nodes = [
        helper.make_node("Gemm", ["input", "fc_w", "fc_b"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["logits"], name="relu"),
    ]
    return model(nodes, [w("fc_w", 4, 16), w("fc_b", 4)], inp=("input", ["N", 16]))


def external_data():
    """An initializer that claims its data lives in another file."""
    m = tiny_conv()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "weights.bin"
    return m


def not_sorted():
    """Nodes out of topological order (relu reads a tensor defined later)."""
    m = tiny_conv()
    nodes = list(m.graph.node)
    nodes[0], nodes[2] = nodes[2], nodes[0]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def bad_opset():
    m = tiny_conv()
    m.opset_import[0].version = 99
    return m


# ---- adversarial graphs: valid protobuf, broken semantics -------------------
# Written to tests/fuzz/regressions/ (test_engine.c loads and runs each in a
# child process: every one must fail cleanly or run without writing out of
# bounds).  Each targets a spot where an index or a size from the file is
# used before shape inference validates it.

def bn_net(conv_out="c1", conv_w="c1_w", bn_inputs=("c1", "bn_g", "bn_b", "bn_m", "bn_v"), oc=4):
    nodes = [
        helper.make_node("Conv", ["input", conv_w], [conv_out], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", list(bn_inputs), ["bn1"], name="bn1"),
        helper.make_node("Relu", ["bn1"], ["feat"], name="relu1"),
    ]
    h, hi = head("feat", oc)
    v = np.abs(rng.standard_normal(oc)).astype(np.float32) + 0.5
    inits = [w("c1_w", oc, 3, 3, 3), w("bn_g", oc), w("bn_b", oc), w("bn_m", oc),
             numpy_helper.from_array(v, "bn_v")] + hi
    return model(nodes + h, inits, check=False)


def adversarial():
    out = {}
    # BatchNormalization with an omitted (""), required input: its value index is -1.
    out["bn_omitted_scale.onnx"] = bn_net(bn_inputs=("c1", "", "bn_b", "bn_m", "bn_v"))
    # Conv whose weight input is omitted.
    out["conv_omitted_weight.onnx"] = bn_net(conv_w="")
    # A Conv with zero output channels feeding a BatchNormalization with empty params.
    m = bn_net(oc=4)
    for t in m.graph.initializer:
        if t.name in ("c1_w", "bn_g", "bn_b", "bn_m", "bn_v"):
            shape = [0] + list(t.dims[1:])
            t.CopyFrom(numpy_helper.from_array(np.zeros(shape, np.float32), t.name))
    out["conv_zero_channels.onnx"] = m
    # A node whose first (required) output is omitted.
    m = tiny_conv()
    m.graph.node[0].output[0] = ""
    out["conv_omitted_output.onnx"] = m
    # The graph output is the graph input itself (no computation).
    g = helper.make_graph([], "g", [helper.make_tensor_value_info("input", F, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("input", F, [1, 3, 8, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    out["output_is_input.onnx"] = m
    # The graph output is an initializer.
    m = tiny_conv()
    m.graph.output[0].name = "h_fc_b"
    out["output_is_initializer.onnx"] = m
    # Logits whose first dim is not the batch: Transpose [N,4] -> [4,N].
    m = tiny_conv()
    m.graph.node[-1].output[0] = "fc"
    m.graph.node.append(helper.make_node("Transpose", ["fc"], ["logits"], name="t", perm=[1, 0]))
    out["output_transposed.onnx"] = m
    # Gather with an out-of-range constant index on a shape tensor.
    m = dynamic_flatten()
    for n in m.graph.node:
        if n.op_type == "Constant":
            n.attribute[0].t.CopyFrom(helper.make_tensor("zero_t", TensorProto.INT64, [], [7]))
    out["gather_index_out_of_range.onnx"] = m
    # Split with sizes that do not add up to the axis.
    m = shuffle()
    for n in m.graph.node:
        if n.op_type == "Split":
            n.attribute[1].ints[:] = [3, 3]
    out["split_sizes_too_big.onnx"] = m
    # Transpose with a perm that repeats an axis / is out of range.
    m = shuffle()
    for n in m.graph.node:
        if n.op_type == "Transpose":
            n.attribute[0].ints[:] = [0, 2, 2, 9, 4]
    out["transpose_bad_perm.onnx"] = m
    # Reshape to a shape with the wrong element count / two -1s.
    m = shuffle()
    for t in m.graph.initializer:
        if t.name == "shp5":
            t.CopyFrom(i64("shp5", [1, -1, -1, 8, 8]))
    out["reshape_two_minus_one.onnx"] = m
    # Concat along an axis out of range.
    m = shuffle()
    for n in m.graph.node:
        if n.op_type == "Concat":
            n.attribute[0].i = 7
    out["concat_bad_axis.onnx"] = m
    # Conv group that does not divide the channels; kernel bigger than the input.
    m = residual_clip()
    for n in m.graph.node:
        if n.name == "dwconv":
            for a in n.attribute:
                if a.name == "group":
                    a.i = 3
    out["conv_bad_group.onnx"] = m
    m = tiny_conv()
    m.graph.initializer[0].CopyFrom(w("c1_w", 4, 3, 11, 11))
    out["conv_kernel_bigger_than_input.onnx"] = m
    # Strides of 0 and negative pads.
    m = tiny_conv()
    for n in m.graph.node:
        if n.op_type == "MaxPool":
            for a in n.attribute:
                if a.name == "strides":
                    a.ints[:] = [0, 0]
    out["maxpool_zero_stride.onnx"] = m
    m = tiny_conv()
    m.graph.node[0].attribute[0].ints[:] = [-5, -5, -5, -5]
    out["conv_negative_pads.onnx"] = m
    # Gemm whose weight does not match the features.
    m = tiny_conv()
    for t in m.graph.initializer:
        if t.name == "h_fc_w":
            t.CopyFrom(w("h_fc_w", 4, 5))
    out["gemm_shape_mismatch.onnx"] = m
    # An input whose C/H/W are symbolic.
    m = tiny_conv()
    d = m.graph.input[0].type.tensor_type.shape.dim
    d[2].ClearField("dim_value")
    d[2].dim_param = "H"
    out["input_symbolic_height.onnx"] = m
    # A graph where a value is consumed twice by the same node, and the input is unused.
    m = tiny_conv()
    m.graph.node[0].input[:] = ["input", "c1_w", "c1_w"]
    out["conv_bias_is_weight.onnx"] = m
    return out


def save(m, folder, name):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    data = m.SerializeToString()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def fixed_batch(m, n):
    """m with its input and output batch fixed at n (no new weights: the
    generator's random stream, and so every other file, stays the same)."""
    f = onnx.ModelProto()
    f.CopyFrom(m)
    for vi in (f.graph.input[0], f.graph.output[0]):
        d = vi.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = n
    return f


def main():
    total = 0
    data = {
        "tiny_conv.onnx": tiny_conv(),
        "unsupported_op.onnx": unsupported_op(),
        "input_2d.onnx": input_2d(),
        "external_data.onnx": external_data(),
        "not_sorted.onnx": not_sorted(),
        "bad_opset.onnx": bad_opset(),
    }
    # the CLI's runs of a model exported with a fixed batch (cli/explain_files)
    data["tiny_conv_b2.onnx"] = fixed_batch(data["tiny_conv.onnx"], 2)
    for name, m in data.items():
        total += save(m, DATA, name)
    print(f"tests/data/onnx: {len(data)} models, {total} bytes")
    seeds = dict(data)
    seeds.update({
        "residual_clip.onnx": residual_clip(),
        "shuffle.onnx": shuffle(),
        "dynamic_flatten.onnx": dynamic_flatten(),
    })
    total = 0
    for name, m in seeds.items():
        total += save(m, SEEDS, name)
    print(f"tests/fuzz/corpus/fuzz_onnx: {len(seeds)} seeds, {total} bytes")
    adv = adversarial()
    total = 0
    for name, m in adv.items():
        total += save(m, REGRESSIONS, name)
    print(f"tests/fuzz/regressions: {len(adv)} hand-made adversarial models, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
