#!/usr/bin/python3
"""Export the benchmark models (random weights, seeded, eval, batch 1, 224 px,
opset 13) plus one fixed input tensor.

    /usr/bin/python3 bench/export_models.py bench/.peer [--models resnet50,...]

Writes DIR/<model>.onnx, DIR/<model>.pt (state_dict, so peer_torch.py times
exactly the same weights) and DIR/input.npy (1x3x224x224 float32, seeded).
Models are exported with the exporter's default TrainingMode.EVAL, i.e. the
way torchvision models are usually exported (Conv+BN already folded by torch).
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch
import torchvision

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121"]
SEED = 1234
SIZE = 224
OPSET = 13


def build(name, seed=SEED):
    torch.manual_seed(seed + sum(map(ord, name)))
    m = getattr(torchvision.models, name)(weights=None)
    return m.eval()


def fixed_input():
    g = torch.Generator().manual_seed(SEED)
    return torch.randn(1, 3, SIZE, SIZE, generator=g)


def conv_gemm_flops(onnx_path):
    """FLOPs (2 * MACs) of the Conv, Gemm and MatMul nodes at batch 1."""
    import onnx
    m = onnx.load(onnx_path)
    for vi in m.graph.input:
        d = vi.type.tensor_type.shape.dim
        if d and d[0].dim_param:
            d[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    shp = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shp[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shp[t.name] = list(t.dims)
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w, y = shp[n.input[1]], shp[n.output[0]]
            total += 2 * int(np.prod(y[1:])) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a_, b_ = shp[n.input[0]], shp[n.input[1]]
            trans_b = any(at.name == "transB" and at.i for at in n.attribute)
            k = a_[-1]
            ncols = b_[0] if trans_b else b_[-1]
            total += 2 * int(np.prod(a_[:-1])) * k * ncols
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--flops", metavar="MODEL",
                    help="print the Conv/Gemm FLOPs of OUTDIR/MODEL.onnx at batch 1 and exit")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args()
    if a.flops:
        print(conv_gemm_flops(os.path.join(a.outdir, a.flops + ".onnx")))
        return
    os.makedirs(a.outdir, exist_ok=True)
    x = fixed_input()
    np.save(os.path.join(a.outdir, "input.npy"), x.numpy().astype("<f4"))
    for name in a.models.split(","):
        onnx_path = os.path.join(a.outdir, name + ".onnx")
        pt_path = os.path.join(a.outdir, name + ".pt")
        if os.path.exists(onnx_path) and os.path.exists(pt_path) and not a.force:
            continue
        m = build(name)
        torch.save(m.state_dict(), pt_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, x, onnx_path, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                              opset_version=OPSET, do_constant_folding=True)
        print(f"exported {onnx_path} ({os.path.getsize(onnx_path) / 2**20:.1f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
