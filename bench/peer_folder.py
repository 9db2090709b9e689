#!/usr/bin/python3
"""The peer for bench/cli_folder.sh: a Python script explaining a folder of
photos one file at a time, as people write it with PIL + torchvision + a
hook Grad-CAM:

    PIL open + thumbnail(800) (JPEG draft mode: the DCT-domain downscale
    camserve uses too) -> Resize(256) CenterCrop(224) ToTensor Normalize ->
    forward with autograd, backward of the top-1 logit to LAYER (frozen
    weights, the activation a leaf: backward stops there, as camserve's) ->
    w = mean_hw(G), cam = relu(sum_c w_c A_c), min-max scaled -> upsampled
    bilinearly to 224 -> jet heatmap PNG (224x224) and the overlay
    0.5*heat + 0.5*photo on the thumbnail -> both PNGs written with PIL at
    compress_level 1 (camserve's PNGs use deflate level 1 too).

    /usr/bin/python3 bench/peer_folder.py MODEL FOLDER OUTDIR --threads T --rounds R

MODEL is one of bench/export_models.py's (weights from bench/.peer/MODEL.pt
when present).  Prints one JSON line: the median and min wall time of a
whole pass over the folder, and the image count."""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_models  # noqa: E402
from peer_torch import DEFAULT_LAYER, get_module  # noqa: E402


def jet(x):
    """OpenCV's COLORMAP_JET as piecewise-linear ramps, x in [0,1] -> RGB uint8."""
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("folder")
    ap.add_argument("outdir")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = export_models.build(a.model)
    pt = os.path.join(HERE, ".peer", a.model + ".pt")
    if os.path.exists(pt):
        model.load_state_dict(torch.load(pt))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    layer = get_module(model, DEFAULT_LAYER[a.model])
    held = {}

    def hook(_m, _i, out):
        out = out.detach().requires_grad_(True)
        held["a"] = out
        return out

    layer.register_forward_hook(hook)
    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    names = sorted(f for f in os.listdir(a.folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    os.makedirs(a.outdir, exist_ok=True)
    passes = []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        for n in names:
            im = Image.open(os.path.join(a.folder, n))
            im.thumbnail((800, 800))
            im = im.convert("RGB")
            x = tf(im).unsqueeze(0)
            logits = model(x)
            logits[0, logits[0].argmax()].backward()
            act, grad = held["a"], held["a"].grad
            cam = F.relu((grad.mean((2, 3), keepdim=True) * act).sum(1, keepdim=True))
            cam = cam - cam.min()
            cam = cam / (1e-7 + cam.max())
            heat = jet(F.interpolate(cam, size=(224, 224), mode="bilinear")[0, 0].detach().numpy())
            big = F.interpolate(cam, size=(im.height, im.width), mode="bilinear")[0, 0].detach().numpy()
            over = (0.5 * jet(big) + 0.5 * np.asarray(im)).astype(np.uint8)
            stem = os.path.join(a.outdir, os.path.splitext(n)[0])
            Image.fromarray(heat).save(stem + ".heatmap.png", compress_level=1)
            Image.fromarray(over).save(stem + ".overlay.png", compress_level=1)
        passes.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"peer": "torch+PIL", "model": a.model, "threads": torch.get_num_threads(),
                      "images": len(names), "median_ms": round(statistics.median(passes), 1),
                      "min_ms": round(min(passes), 1)}))


if __name__ == "__main__":
    main()
