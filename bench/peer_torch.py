#!/usr/bin/python3
"""PyTorch peer for camserve's benchmark.

    /usr/bin/python3 bench/peer_torch.py resnet50 --iters 20 --threads 2 [--gradcam layer4]

Times the eager forward (eval, torch.no_grad, torch.set_num_threads(T)) and,
with --gradcam LAYER, a hook-based Grad-CAM: forward with autograd on,
backward of the top-1 logit (raw score) down to LAYER only, weights = spatial
mean of the gradients, cam = relu(sum_c w_c A_c), then per image
x -= min(x); x /= (1e-7 + max(x)) (pytorch-grad-cam's scale_cam_image), at
layer resolution.  By default the parameters are frozen and the hooked
activation is made a fresh leaf, so backward stops at LAYER (what camserve
does); --gradcam-mode full instead runs backward through the whole network
with parameter gradients, as pytorch-grad-cam does.

Weights/input come from bench/.peer (bench/export_models.py) when present, so
every peer runs the same numbers.  Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_models  # noqa: E402

DEFAULT_LAYER = {"resnet50": "layer4", "mobilenet_v2": "features", "efficientnet_b0": "features",
                 "densenet121": "features"}


def get_module(model, path):
    m = model
    for p in path.split("."):
        m = m[int(p)] if p.isdigit() else getattr(m, p)
    return m


def stats(ts):
    ms = [t * 1e3 for t in ts]
    return {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3),
            "max_ms": round(max(ms), 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--gradcam", nargs="?", const="", default=None, metavar="LAYER",
                    help="also time Grad-CAM at LAYER (module path; default per model)")
    ap.add_argument("--gradcam-mode", choices=["layer", "full"], default="layer")
    ap.add_argument("--dir", default=os.path.join(HERE, ".peer"))
    ap.add_argument("--bf16", action="store_true",
                    help="run under torch.autocast('cpu', dtype=torch.bfloat16): the peer of camserve --precision bf16")
    ap.add_argument("--jit", action="store_true",
                    help="time the forward of torch.jit.optimize_for_inference(torch.jit.script(model)) "
                         "(frozen, Conv+BN folded, MKL-DNN convs) instead of eager")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = export_models.build(a.model)
    pt = os.path.join(a.dir, a.model + ".pt")
    if os.path.exists(pt):
        model.load_state_dict(torch.load(pt))
    model.eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    inp = os.path.join(a.dir, "input.npy")
    x = torch.from_numpy(np.load(inp)) if os.path.exists(inp) else export_models.fixed_input()

    out = {"peer": "torch", "model": a.model, "threads": torch.get_num_threads(),
           "iters": a.iters, "warmup": a.warmup, "input_shape": list(x.shape),
           "torch": torch.__version__, "load_ms": round(load_ms, 1)}

    fwd = model
    out["mode"] = "eager"
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)
    amp.__enter__()  # for the whole run: forward and Grad-CAM
    out["precision"] = "bf16 (torch.autocast)" if a.bf16 else "fp32"
    if a.jit:
        with torch.no_grad():
            fwd = torch.jit.optimize_for_inference(torch.jit.script(model))
        out["mode"] = "jit.optimize_for_inference"
    with torch.no_grad():
        for _ in range(a.warmup):
            logits = fwd(x)
        ts = []
        for _ in range(a.iters):
            t = time.perf_counter()
            logits = fwd(x)
            ts.append(time.perf_counter() - t)
    out["top1"] = int(logits.argmax(1)[0])
    out["stages"] = {"forward": stats(ts)}

    if a.gradcam is not None:
        layer = a.gradcam or DEFAULT_LAYER.get(a.model)
        if not layer:
            ap.error("give --gradcam LAYER for this model")
        full = a.gradcam_mode == "full"
        for p in model.parameters():
            p.requires_grad_(full)
        store = {}

        def hook(mod, inp_, o):
            if not full:
                o = o.detach().requires_grad_(True)  # a leaf: backward stops here
            store["a"] = o
            o.register_hook(lambda g: store.__setitem__("g", g))
            # hand on a copy: the caller may modify it in place (DenseNet's
            # F.relu(features, inplace=True)), which a leaf does not allow
            return o.clone()

        h = get_module(model, layer).register_forward_hook(hook)

        def gradcam():
            model.zero_grad(set_to_none=True)
            lg = model(x)
            c = lg.argmax(1)
            lg.gather(1, c.view(-1, 1)).sum().backward()
            A, G = store["a"].detach(), store["g"]
            w = G.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((w * A).sum(1))
            cam = cam - cam.amin(dim=(1, 2), keepdim=True)
            cam = cam / (1e-7 + cam.amax(dim=(1, 2), keepdim=True))
            return cam

        for _ in range(a.warmup):
            cam = gradcam()
        ts = []
        for _ in range(a.iters):
            t = time.perf_counter()
            cam = gradcam()
            ts.append(time.perf_counter() - t)
        h.remove()
        out["stages"]["gradcam"] = stats(ts)
        out["gradcam_layer"] = layer
        out["gradcam_mode"] = a.gradcam_mode
        out["cam_shape"] = list(cam.shape)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
