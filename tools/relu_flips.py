#!/usr/bin/python3
"""Why are some middle-layer maps far from PyTorch's?  Count the ReLU
decisions that float32 rounding flips, and show they explain everything.

    /usr/bin/python3 tools/relu_flips.py DIR [--layer middle|default] [--threads 2]

DIR is one family of a golden set made with `make_golden.py --float64`
(tests/golden/<family> or, with --full, /tmp/camserve-full/<arch>); the
model and input are rebuilt exactly as make_golden.py made them.

1. PyTorch float32 against float64 (any family): the ReLU / ReLU6 /
   Hardtanh calls where the float32 pre-activation z and the float64 one
   disagree in sign, with the largest |z64| among them.
2. camserve against float64 (ResNet families: torchvision Bottleneck /
   BasicBlock after the CAM layer; needs the build in build/): camserve's
   own pre-activations of every ReLU after the layer (tools/dump_layers.c,
   built here against build/libcamserve_core.a), the units where their sign
   differs from float64's, and the float64 gradient recomputed with
   camserve's ReLU decisions (z * [z_camserve > 0] instead of relu(z)).  If
   that gradient equals camserve's to float32 rounding while the plain
   float64 one does not, the whole difference is those few decisions, each
   on a unit whose exact pre-activation is smaller than float32's error in
   computing it: ill-conditioning, not a bug.

Measured (2026-11-27, docs/cam.md), full-size resnet50 at its middle layer
(layer2's output): camserve's ReLU decisions after layer2 differ from
float64's at 5 of 2 483 712 units, each with |z64| <= 4.5e-5 where
camserve's error on those tensors is up to 6e-5 .. 2.8e-4; float64 with
those 5 decisions reproduces camserve's gradient to 4.5e-9 (max |grad|
5.7e-3; plain float64 is 2.1e-4 away) and all six maps to <= 3e-6 (plain
float64: 5.1e-4 .. 3.4e-2).  PyTorch float32 itself flips 4 units (one
after layer2).  Takes about a minute on 2 cores.
"""
import argparse
import copy
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELUS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def relu_inputs(model, x):
    """(module name, pre-activation) for every ReLU-like module call, in order."""
    names = {m: n for n, m in model.named_modules()}
    zs = []
    hs = [m.register_forward_pre_hook(lambda m, i: zs.append((names[m], i[0].detach().clone())))
          for m in model.modules() if isinstance(m, RELUS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return zs


def torch_flips(model, x):
    z32 = relu_inputs(model, x)
    z64 = relu_inputs(copy.deepcopy(model).double(), x.double())
    assert len(z32) == len(z64)
    total = 0
    print(f"1. PyTorch float32 vs float64: {len(z32)} ReLU calls, "
          f"{sum(z.numel() for _, z in z32)} units")
    for (name, a), (_, b) in zip(z32, z64):
        flip = (a > 0) != (b > 0)
        if flip.any():
            total += int(flip.sum())
            print(f"   {name}: {int(flip.sum())} flipped, largest |z64| there {float(b.abs()[flip].max()):.2e} "
                  f"(max |z32 - z64| in this call {float((a.double() - b).abs().max()):.2e})")
    print(f"   {total} flipped units in all")


def build_dumper(work):
    """Compiles tools/dump_layers.c and links it as build/ links test_explain."""
    bdir = os.path.join(ROOT, "build")
    link = os.path.join(bdir, "CMakeFiles", "test_explain.dir", "link.txt")
    if not os.path.exists(link):
        sys.exit("relu_flips: build/ with test_explain is needed (cmake --build build)")
    obj = os.path.join(work, "dump_layers.o")
    exe = os.path.join(work, "dump_layers")
    subprocess.run(["cc", "-std=c11", "-O2", "-D_GNU_SOURCE", "-I" + os.path.join(ROOT, "include"),
                    "-c", os.path.join(ROOT, "tools", "dump_layers.c"), "-o", obj], check=True)
    cmd = shlex.split(open(link).read())
    o = cmd.index("-o")
    cmd = [cmd[0], obj, "-o", exe] + cmd[o + 2:]
    subprocess.run(cmd, check=True, cwd=bdir)
    return exe


def resnet_blocks_after(model, layer_module):
    """The (stage name, index, block) of every residual block after the CAM
    layer (a stage 'layerN'), in order."""
    stages = ["layer1", "layer2", "layer3", "layer4"]
    if layer_module not in stages:
        return None
    out = []
    for st in stages[stages.index(layer_module) + 1:]:
        for i, blk in enumerate(getattr(model, st)):
            if not isinstance(blk, (tv_resnet.Bottleneck, tv_resnet.BasicBlock)):
                return None
            out.append((st, i, blk))
    return out


def relu_tensor_names(onnx_path, stage, i, nrelu):
    """The ONNX inputs of block stage.i's ReLU nodes (relu, relu_1[, relu_2])."""
    g = onnx.load(onnx_path).graph
    by_name = {n.name: n for n in g.node}
    names = []
    for k in range(nrelu):
        node = by_name[f"/{stage}/{stage}.{i}/relu{'' if k == 0 else '_%d' % k}/Relu"]
        names.append(node.input[0])
    return names


def masked_block(blk, masks):
    """blk's forward with relu(z) replaced by z * mask (fixed masks)."""
    bottleneck = isinstance(blk, tv_resnet.Bottleneck)

    def fwd(x):
        o = blk.bn1(blk.conv1(x)) * masks[0]
        o = blk.bn2(blk.conv2(o))
        if bottleneck:
            o = blk.bn3(blk.conv3(o * masks[1]))
        idt = blk.downsample(x) if blk.downsample is not None else x
        return (o + idt) * masks[-1]
    return fwd


def camserve_flips(model, x, meta, which, d, threads):
    spec = mg.FAMILIES[meta["family"]][which]
    blocks = resnet_blocks_after(model, spec) if isinstance(spec, str) else None
    if not blocks:
        print(f"2. camserve vs float64: only for ResNet stages followed by residual blocks "
              f"(the {which} layer here is {spec!r})")
        return
    layer = meta[f"{which}_layer"]
    onnx_path = os.path.join(d, "model.onnx")
    per_block = [relu_tensor_names(onnx_path, st, i, 3 if isinstance(b, tv_resnet.Bottleneck) else 2)
                 for st, i, b in blocks]
    flat = [t for names in per_block for t in names]
    with tempfile.TemporaryDirectory() as work:
        exe = build_dumper(work)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run([exe, d, work, layer] + flat, check=True, env=env, stdout=subprocess.DEVNULL)
        g_cs = np.load(os.path.join(work, "grad.npy")).astype(np.float64)
        a_cs = np.load(os.path.join(work, "act_0.npy")).astype(np.float64)
        z_cs = [torch.from_numpy(np.load(os.path.join(work, f"act_{k + 1}.npy")).astype(np.float64))
                for k in range(len(flat))]
    m64 = copy.deepcopy(model).double()
    classes = torch.tensor(meta["classes"])
    zs64 = relu_inputs(m64, x.double())
    # relu_inputs lists module calls in order (relu, relu_1, relu_2 of each
    # block, as the ONNX nodes); keep those of the blocks after the layer
    after = [z for n, z in zs64 if any(n == f"{st}.{i}.relu" for st, i, _ in blocks)]
    assert len(after) == len(flat), (len(after), len(flat))
    print(f"2. camserve vs float64 after {layer}: {len(flat)} ReLU calls, "
          f"{sum(z.numel() for z in after)} units")
    total = 0
    masks = []
    for name, zc, zf in zip(flat, z_cs, after):
        flip = (zc > 0) != (zf > 0)
        masks.append((zc > 0).double())
        if flip.any():
            total += int(flip.sum())
            print(f"   {name}: {int(flip.sum())} flipped, largest |z64| there {float(zf.abs()[flip].max()):.2e} "
                  f"(max |z64| {float(zf.abs().max()):.2e}, max |z_camserve - z64| {float((zc - zf).abs().max()):.2e})")
    print(f"   {total} flipped units in all")
    k = 0
    for (st, i, _), names in zip(blocks, per_block):
        b = getattr(m64, st)[i]
        b.forward = masked_block(b, masks[k:k + len(names)])
        k += len(names)
    _, _, A, G = mg.act_and_grad(m64, x.double(), spec, classes)
    G64 = np.load(os.path.join(d, f"grad_{which}_f64.npy")).astype(np.float64)
    gmax = float(np.abs(G64).max())
    print(f"   max |grad_camserve - grad64|                      {np.abs(g_cs - G64).max():.2e}  (max |grad| {gmax:.2e})")
    print(f"   max |grad_camserve - grad64 with camserve's ReLUs| {np.abs(g_cs - G).max():.2e}")
    print("   maps (normalised, layer resolution; camserve's from its own activation and gradient):")
    print(f"   {'method':20s} |camserve - f64|  |camserve - f64 with camserve's ReLUs|")
    for meth in mg.CAM_METHODS:
        cs_map = mg.scale_cam(mg.cam_raw(meth, a_cs, g_cs)).astype(np.float64)
        t64 = np.load(os.path.join(d, f"cam_{meth}_{which}_f64.npy")).astype(np.float64)
        tm = mg.scale_cam(mg.cam_raw(meth, A, G)).astype(np.float64)
        print(f"   {meth:20s} {np.abs(cs_map - t64).max():.2e}         {np.abs(cs_map - tm).max():.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="a family folder made with make_golden.py --float64")
    ap.add_argument("--layer", default="middle", choices=["middle", "default"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = json.load(open(os.path.join(args.dir, "meta.json")))
    if "float64" not in meta:
        sys.exit("relu_flips: no float64 reference here; make the set with make_golden.py --float64")
    model, x, _ = mg.model_and_input(meta["family"], full=meta.get("torchvision_arch") is not None)
    assert np.array_equal(x.numpy(), np.load(os.path.join(args.dir, "input.npy"))), "input differs"
    print(f"{args.dir}: {meta['family']} ({meta.get('torchvision_arch') or 'small'}), "
          f"{args.layer} layer {meta[args.layer + '_layer']}")
    torch_flips(model, x)
    camserve_flips(model, x, meta, args.layer, args.dir, args.threads)


if __name__ == "__main__":
    main()
