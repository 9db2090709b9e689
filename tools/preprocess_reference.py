#!/usr/bin/python3
"""Reference tensors for camserve's preprocessing parity test.

Runs torchvision's Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize on
PIL (Debian: torchvision 0.14, PIL 9.4; run with /usr/bin/python3) for the
photos Debian's darknet package ships, and writes tests/golden/preprocess/:

  <photo>.u8      224*224*3 bytes, HWC RGB: the PIL image after Resize and
                  CenterCrop, i.e. exactly what ToTensor consumes.  Normalize
                  is an affine map per channel, so the normalised reference is
                  (u8/255 - mean)/std; the C test computes it from these bytes.
  dog.npy         the full float32 tensor [3,224,224] straight out of
                  torchvision for one photo, so Normalize's own arithmetic
                  is covered too.
  manifest.json   photo byte sizes (a different darknet build -> the test
                  skips instead of failing) and the transform parameters.

Kept small (~1.7 MB): bytes instead of float tensors for six of the photos.
Usage: tools/preprocess_reference.py [--darknet DIR] [--out DIR]
"""
import argparse, json, os, sys

import numpy as np
from PIL import Image
import torchvision.transforms as T

PHOTOS = ["dog", "eagle", "giraffe", "horses", "kite", "person", "scream"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--darknet", default="/usr/share/darknet/data")
    ap.add_argument("--out", default=os.path.join(root, "tests", "golden", "preprocess"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    geo = T.Compose([T.Resize(256), T.CenterCrop(224)])
    full = T.Compose([geo, T.ToTensor(), T.Normalize(MEAN, STD)])
    manifest = {"transform": "Resize(256) CenterCrop(224) ToTensor Normalize",
                "mean": MEAN, "std": STD, "photos": {}}
    for name in PHOTOS:
        path = os.path.join(a.darknet, name + ".jpg")
        im = Image.open(path).convert("RGB")
        crop = geo(im)
        u8 = np.asarray(crop, dtype=np.uint8)
        assert u8.shape == (224, 224, 3)
        open(os.path.join(a.out, name + ".u8"), "wb").write(u8.tobytes())
        t = full(im).numpy().astype(np.float32)
        # the bytes really are what the tensor was made from
        again = ((u8.astype(np.float32) / 255 - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)
        assert np.abs(again - t).max() < 1e-5, name
        if name == "dog":
            np.save(os.path.join(a.out, "dog.npy"), t)
        manifest["photos"][name] = {"bytes": os.path.getsize(path), "size": list(im.size)}
        print("%-8s %dx%d" % (name, im.size[0], im.size[1]))
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
