#!/usr/bin/python3
"""PyTorch peer for AblationCAM on ResNet-50 at layer4, batch 1.

    /usr/bin/python3 bench/peer_ablation.py --threads 2 [--iters 3] [--full-batches 3]

AblationCAM scores the top-1 class once per channel of the layer (2048),
with that channel ablated, in batches of 32 (pytorch-grad-cam's default).
Two ways to run it in PyTorch (eval, torch.no_grad):

  tail  the lean way: the layer's activations once, then only what follows
        the layer (avgpool + fc) on each batch of ablated copies; what
        camserve's engine does since it prunes the override plan.
  full  pytorch-grad-cam's way: each batch is the input repeated 32 times
        through the whole network, a forward hook on layer4 returning the
        ablated batch.  Timed over --full-batches batches and scaled to the
        64 batches of the whole run (said so in the output).

The ablation value is pytorch-grad-cam's when min(A) == 0 (0, ResNet-50's
layer4 follows a ReLU).  Weights and input from bench/.peer
(bench/export_models.py).  Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_models  # noqa: E402

BATCH = 32


def ablated(act, c0, k):
    """k copies of act (1 x C x H x W) with channels c0 .. c0+k-1 zeroed, one each."""
    b = act.repeat(k, 1, 1, 1)
    for j in range(k):
        b[j, c0 + j] = 0
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--full-batches", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(HERE, ".peer"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = export_models.build("resnet50")
    pt = os.path.join(a.dir, "resnet50.pt")
    if os.path.exists(pt):
        model.load_state_dict(torch.load(pt))
    model.eval()
    inp = os.path.join(a.dir, "input.npy")
    x = torch.from_numpy(np.load(inp)) if os.path.exists(inp) else export_models.fixed_input()
    x = x[:1]

    with torch.no_grad():
        feats = {}
        h = model.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
        logits = model(x)
        h.remove()
        act = feats["a"]
        cls = int(logits[0].argmax())
        orig = float(logits[0, cls])
        C = act.shape[1]
        assert float(act.min()) == 0.0, "layer4 follows a ReLU"

        def tail_run():
            scores = torch.empty(C)
            for c0 in range(0, C, BATCH):
                k = min(BATCH, C - c0)
                b = ablated(act, c0, k)
                scores[c0:c0 + k] = model.fc(torch.flatten(model.avgpool(b), 1))[:, cls]
            w = (orig - scores) / orig
            return torch.relu((w[:, None, None] * act[0]).sum(0))

        tail = []
        for _ in range(a.iters + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            cam = tail_run()
            tail.append(time.perf_counter() - t0)
        tail = tail[1:]

        state = {}

        def hook(m, i, o):
            return ablated(o[:1], state["c0"], o.shape[0])

        h = model.layer4.register_forward_hook(hook)
        xs = x.repeat(BATCH, 1, 1, 1)
        full = []
        for bi in range(a.full_batches + 1):  # the first is a warm-up
            state["c0"] = bi * BATCH
            t0 = time.perf_counter()
            model(xs)
            full.append(time.perf_counter() - t0)
        h.remove()
        per_batch = statistics.median(full[1:])

    print(json.dumps({
        "model": "resnet50", "layer": "layer4", "channels": C, "class": cls, "threads": a.threads,
        "torch": torch.__version__,
        "tail_ms": round(statistics.median(tail) * 1e3, 2),
        "full_batch_ms": round(per_batch * 1e3, 1),
        "full_ms_scaled": round(per_batch * 1e3 * ((C + BATCH - 1) // BATCH), 0),
        "cam_peak": round(float(cam.max()), 6),
    }))


if __name__ == "__main__":
    main()
