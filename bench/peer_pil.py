#!/usr/bin/python3
"""The peer for bench/bench_image.sh: what a Python service does with an
upload -- PIL open + thumbnail(800) (which uses JPEG draft mode, i.e. the
same DCT-domain downscale) + torchvision Resize(256) CenterCrop(224)
ToTensor Normalize.  Single-threaded torch.  Prints median/min ms."""
import sys, time

import torch
from PIL import Image
import torchvision.transforms as T

torch.set_num_threads(1)
path = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    im = Image.open(path)
    im.thumbnail((800, 800))
    x = tf(im.convert("RGB")).unsqueeze(0)
    times.append((time.perf_counter() - t0) * 1e3)
times.sort()
print("%-22s median %7.2f ms  min %7.2f ms  (thumbnail %dx%d, tensor %s)"
      % ("peer PIL+torchvision", times[len(times) // 2], times[0], im.size[0], im.size[1],
         tuple(x.shape)))
