#!/usr/bin/env python3
"""PyTorch's own autocast error on the golden families (issue 8's precision bar).

camserve's test_cuda holds fp16 and bf16 to "the same top-1 and logits within
2e-2 of fp32" (max |d| / max |ref|).  This measures what torch.autocast does
on the same architectures, built by tools/make_golden.py with its seeded
random weights (on this machine's torch/torchvision), on the GPU, against
the same model in fp32 (TF32 off).  With --device cpu, torch.autocast("cpu")
in bf16 only (CPU autocast has no fp16), the peer of camserve's
--device cpu --precision bf16 (test_cpu_bf16).  Prints one JSON object:
{"torch": ..., "device": ..., "families": {name: {"fp16": {"rel_err", "top1"}, "bf16": {...}}}}.

    python3 bench/peer_torch_precision.py [--device cuda|cpu]
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import make_golden  # noqa: E402  (the families and their seeded weights)


def main():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    kind = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cuda"
    dev = torch.device(kind)
    precs = (("fp16", torch.float16), ("bf16", torch.bfloat16)) if kind == "cuda" else (("bf16", torch.bfloat16),)
    out = {"torch": torch.__version__, "device": kind, "families": {}}
    for name in sorted(make_golden.FAMILIES):
        try:
            model, x, _ = make_golden.model_and_input(name)
            model = model.to(dev).eval()
            x = x.to(dev)
            with torch.no_grad():
                ref = model(x).float()
                r = {}
                for key, dt in precs:
                    with torch.autocast(kind, dtype=dt):
                        y = model(x).float()
                    err = ((y - ref).abs().max() / (ref.abs().max() + 1e-12)).item()
                    top1 = int((y.argmax(1) == ref.argmax(1)).sum().item())
                    r[key] = {"rel_err": err, "top1": top1, "batch": int(x.shape[0])}
            out["families"][name] = r
        except Exception as e:  # report, keep going
            out["families"][name] = {"error": f"{type(e).__name__}: {e}"[:200]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
