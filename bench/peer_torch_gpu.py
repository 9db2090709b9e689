#!/usr/bin/env python3
"""PyTorch GPU peers for camserve's CUDA backend (issue 8), ResNet-50.

    python3 bench/peer_torch_gpu.py --dir DIR [--iters N] [--what all|eager|compile]
    python3 bench/peer_torch_gpu.py --dir DIR --export      # writes DIR/resnet50.onnx + input.npy

Weights: DIR/resnet50.pt when bench/export_models.py made it, else the same
seeded random init (torchvision.models.resnet50(weights=None), seed as
export_models.py).  Without torchvision an equivalent ResNet-50 defined
below is used (same module names: layer3, layer4, fc), so the hooks and the
exported tensor names match.

Peers, each timed with CUDA events after warm-up, median of N:
  eager_fwd_b1        autocast fp16, no_grad, batch 1
  eager_gradcam_l4    autocast fp16, hook Grad-CAM at layer4: forward with
                      autograd, backward of the top-1 raw logit with frozen
                      weights (the hooked activation is a leaf: the gradient
                      stops there), w = mean_hw(g), relu(sum w A), min-max
  eager_gradcam_l3    the same at layer3 (the issue's "lean" GradCAM)
  eager_fwd_b64       autocast fp16 forward, batch 64 (images/s), input on the GPU
  eager_fwd_b64_host  the same from a host tensor to host logits (wall clock):
                      pageable (_host) and pinned (_pinned) input
  compiled_fwd_b1     torch.compile(mode="reduce-overhead") = CUDA graphs
  compiled_fwd_b64    same at batch 64 (and _host: from a pageable host tensor)
  compiled_cam_fc_l4  compiled forward returning layer4 and logits, CAM from
                      the fc weights (gradients of a linear head on a global
                      average pool are the fc row / HW: no backward needed)
Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1234


# ---- a torchvision-compatible ResNet-50, for machines without torchvision ----
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet50(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make(64, 3)
        self.layer2 = self._make(128, 4, 2)
        self.layer3 = self._make(256, 6, 2)
        self.layer4 = self._make(512, 3, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)

    def _make(self, planes, blocks, stride=1):
        ds = None
        if stride != 1 or self.inplanes != planes * 4:
            ds = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                               nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, ds)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(dirpath):
    try:
        import torchvision
        torch.manual_seed(SEED + sum(map(ord, "resnet50")))
        m = torchvision.models.resnet50(weights=None)
        src = "torchvision"
    except Exception:  # no torchvision on this machine
        torch.manual_seed(SEED + sum(map(ord, "resnet50")))
        m = ResNet50()
        src = "builtin"
    pt = os.path.join(dirpath, "resnet50.pt")
    if os.path.exists(pt):
        m.load_state_dict(torch.load(pt, map_location="cpu"))
        src += "+resnet50.pt"
    return m.eval(), src


def fixed_input(n=1):
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, 3, 224, 224, generator=g)
    return x.repeat(n, 1, 1, 1)


def export(dirpath):
    os.makedirs(dirpath, exist_ok=True)
    m, src = build(dirpath)
    x = fixed_input()
    np.save(os.path.join(dirpath, "input.npy"), x.numpy().astype("<f4"))
    path = os.path.join(dirpath, "resnet50.onnx")
    kw = dict(input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
              opset_version=13, do_constant_folding=True)
    try:  # the TorchScript exporter writes the names camserve's docs use
        torch.onnx.export(m, x, path, dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(m, x, path, **kw)
    print(f"exported {path} ({os.path.getsize(path) / 2**20:.1f} MiB, weights {src})", file=sys.stderr)


def timed(fn, iters, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return {"median_ms": statistics.median(ts), "min_ms": min(ts)}


def timed_wall(fn, iters, warmup=3):
    """wall clock around fn() + synchronize: for work that starts on the host"""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(ts), "min_ms": min(ts)}


def hook_gradcam(m, layer, x):
    """pytorch-grad-cam's GradCAM, lean: frozen weights, the activation a leaf."""
    store = {}

    def fwd_hook(mod, inp, out):
        leaf = out.detach().requires_grad_(True)
        store["a"] = leaf
        return leaf

    h = getattr(m, layer).register_forward_hook(fwd_hook)

    def run():
        with torch.autocast("cuda", dtype=torch.float16):
            logits = m(x)
        top = logits.argmax(1)
        score = logits.gather(1, top[:, None]).sum()
        (g,) = torch.autograd.grad(score, store["a"])
        a = store["a"].float()
        w = g.float().mean((2, 3), keepdim=True)
        cam = torch.relu((w * a).sum(1))
        flat = cam.flatten(1)
        flat = flat - flat.min(1, keepdim=True).values
        flat = flat / (1e-7 + flat.max(1, keepdim=True).values)
        return flat

    return run, h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--export", action="store_true")
    ap.add_argument("--what", default="all", choices=["all", "eager", "compile"])
    a = ap.parse_args()
    if a.export:
        export(a.dir)
        return
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    m, src = build(a.dir)
    m = m.to(dev)
    for p in m.parameters():
        p.requires_grad_(False)
    x1, x64 = fixed_input(1).to(dev), fixed_input(64).to(dev)
    out = {"peer": "pytorch", "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
           "weights": src, "iters": a.iters}

    if a.what in ("all", "eager"):
        def fwd(x):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                return m(x)
        out["eager_fwd_b1"] = timed(lambda: fwd(x1), a.iters)
        r = timed(lambda: fwd(x64), max(5, a.iters // 5))
        r["images_per_s"] = 64e3 / r["median_ms"]
        out["eager_fwd_b64"] = r
        # from host memory to logits in host memory (camserve's scope: its
        # API takes a host buffer): a pageable tensor, and a pinned one
        xh, xp = fixed_input(64), fixed_input(64).pin_memory()
        for key, src, nb in (("eager_fwd_b64_host", xh, False), ("eager_fwd_b64_pinned", xp, True)):
            r = timed_wall(lambda: fwd(src.to(dev, non_blocking=nb)).float().cpu(), max(5, a.iters // 5))
            r["images_per_s"] = 64e3 / r["median_ms"]
            out[key] = r
        for layer in ("layer4", "layer3"):
            run, h = hook_gradcam(m, layer, x1)
            out[f"eager_gradcam_{layer[-1] == '4' and 'l4' or 'l3'}"] = timed(run, a.iters)
            h.remove()

    if a.what in ("all", "compile"):
        try:
            cm = torch.compile(m, mode="reduce-overhead")

            def cfwd(x):
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                    return cm(x)
            t0 = time.time()
            cfwd(x1)
            out["compile_s_b1"] = time.time() - t0
            out["compiled_fwd_b1"] = timed(lambda: cfwd(x1), a.iters, warmup=10)
            r = timed(lambda: cfwd(x64), max(5, a.iters // 5), warmup=5)
            r["images_per_s"] = 64e3 / r["median_ms"]
            out["compiled_fwd_b64"] = r
            xh = fixed_input(64)
            r = timed_wall(lambda: cfwd(xh.to(dev)).float().cpu(), max(5, a.iters // 5))
            r["images_per_s"] = 64e3 / r["median_ms"]
            out["compiled_fwd_b64_host"] = r

            class Feat(nn.Module):
                """layer4 and the logits in one graph: CAM from the fc weights."""

                def __init__(self, net):
                    super().__init__()
                    self.net = net

                def forward(self, x):
                    n = self.net
                    f = n.maxpool(n.relu(n.bn1(n.conv1(x))))
                    f = n.layer4(n.layer3(n.layer2(n.layer1(f))))
                    logits = n.fc(torch.flatten(n.avgpool(f), 1))
                    top = logits.argmax(1)
                    w = n.fc.weight[top].float()  # d logit / d f = fc row / HW, same map after scaling
                    cam = torch.relu(torch.einsum("nc,nchw->nhw", w, f.float())).flatten(1)
                    cam = cam - cam.min(1, keepdim=True).values
                    return logits, cam / (1e-7 + cam.max(1, keepdim=True).values)

            fm = torch.compile(Feat(m), mode="reduce-overhead")

            def ccam():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
                    return fm(x1)
            ccam()
            out["compiled_cam_fc_l4"] = timed(ccam, a.iters, warmup=10)
        except Exception as e:  # report, do not hide the eager numbers
            out["compile_error"] = f"{type(e).__name__}: {e}"[:400]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
