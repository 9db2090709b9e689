#!/usr/bin/python3
"""Train camserve's embedded default model on a synthetic vision task.

The task: 12 classes of objects (emoji from Debian's fonts-noto-color-emoji,
rendered by PIL from the CBDT colour font) composited at a random position,
scale, rotation and colour onto photographic backgrounds (random crops of the
darknet package's photos and desktop-base's raster wallpapers) or procedural
textures, with distractors (20 other emoji and plain shapes, never a class)
and partial occlusion.  The generator knows the exact visible object mask of
every image, which `camserve eval` uses to score explanations.

Everything is seeded: image i of a split is drawn from its own
numpy Generator seeded with (split seed, i), so the data do not depend on the
number of worker processes; training uses torch.manual_seed and a fixed
thread count (--threads, default 2), so a rerun on the same machine gives the
same weights.

Usage (Debian's interpreter: torch 1.13, torchvision 0.14, PIL 9.4):

    /usr/bin/python3 tools/train_default_model.py                 # train + export models/default/
    /usr/bin/python3 tools/train_default_model.py --eval-only DIR # held-out set in camserve's eval layout
    /usr/bin/python3 tools/train_default_model.py --samples-only  # web/samples/ + tests/data/eval_small/

The eval layout (see docs/models.md): DIR/labels.txt, DIR/<class>/<stem>.jpg
and DIR/<class>/<stem>.mask.png (8-bit, 255 = object).
"""
import argparse
import glob
import io
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
SIZE = 128  # model input (and native render size)
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

CLASSES = [  # (label, code point)
    ("cat", 0x1F431), ("dog", 0x1F436), ("car", 0x1F697), ("airplane", 0x2708),
    ("bicycle", 0x1F6B2), ("apple", 0x1F34E), ("banana", 0x1F34C), ("pizza", 0x1F355),
    ("guitar", 0x1F3B8), ("rocket", 0x1F680), ("butterfly", 0x1F98B), ("sunflower", 0x1F33B),
]
DISTRACTORS = [  # star balloon key books clock moon gem grapes turtle gift coffee bell
    0x2B50, 0x1F388, 0x1F511, 0x1F4DA, 0x23F0, 0x1F319, 0x1F48E, 0x1F347, 0x1F422, 0x1F381,
    0x2615, 0x1F514, 0x26BD, 0x1F335, 0x1F344, 0x1F438, 0x1F451, 0x1F9F8, 0x1F4F7, 0x2693,
]  # ... soccer ball cactus mushroom frog crown teddy bear camera anchor

SEED_TRAIN, SEED_VAL, SEED_EVAL, SEED_SMALL, SEED_SAMPLES = 1000, 2000, 3000, 4000, 5000

# ---------------------------------------------------------------------------
# assets


def glyph(cp, _cache={}):
    """RGBA glyph of code point cp at the font's native strike, cropped."""
    if cp not in _cache:
        font = ImageFont.truetype(EMOJI_FONT, 109)
        im = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((4, 4), chr(cp), font=font, embedded_color=True)
        bbox = im.getbbox()
        if bbox is None:
            raise SystemExit("PIL rendered nothing for U+%04X: is fonts-noto-color-emoji installed?" % cp)
        _cache[cp] = im.crop(bbox)
    return _cache[cp]


def photo_paths():
    paths = sorted(glob.glob("/usr/share/darknet/data/*.jpg"))
    walls = sorted(glob.glob("/usr/share/desktop-base/*/grub/*.png") +
                   glob.glob("/usr/share/desktop-base/*/wallpaper/contents/images/*.png") +
                   glob.glob("/usr/share/backgrounds/*/*.jpg") + glob.glob("/usr/share/wallpapers/*/contents/images/*.png"))
    return paths, sorted(set(walls))


_PHOTOS = None


def photos():
    global _PHOTOS
    if _PHOTOS is None:
        p, w = photo_paths()
        _PHOTOS = ([Image.open(x).convert("RGB") for x in p], [Image.open(x).convert("RGB") for x in w])
    return _PHOTOS


# ---------------------------------------------------------------------------
# the generator


def rand_color(rng, lo=0, hi=256):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def procedural(rng, S):
    kind = rng.integers(0, 5)
    if kind == 0:  # smooth noise (value noise, several octaves)
        acc = np.zeros((S, S, 3), np.float32)
        for octave, amp in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.12)):
            n = rng.random((octave, octave, 3)).astype(np.float32)
            up = np.asarray(Image.fromarray((n * 255).astype(np.uint8)).resize((S, S), Image.BICUBIC), np.float32)
            acc += amp * up
        acc /= 1.87
        c0, c1 = np.array(rand_color(rng), np.float32), np.array(rand_color(rng), np.float32)
        t = acc.mean(2, keepdims=True) / 255.0
        arr = c0 * (1 - t) + c1 * t + (acc - acc.mean(2, keepdims=True)) * 0.5
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == 1:  # linear gradient
        a = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:S, 0:S].astype(np.float32) / S
        t = ((x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.75) / 1.5
        c0, c1 = np.array(rand_color(rng), np.float32), np.array(rand_color(rng), np.float32)
        arr = c0 * (1 - t[..., None]) + c1 * t[..., None] + rng.normal(0, 6, (S, S, 3))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == 2:  # stripes / checker
        period = rng.uniform(S / 16, S / 3)
        y, x = np.mgrid[0:S, 0:S].astype(np.float32)
        a = rng.uniform(0, math.pi)
        u = x * math.cos(a) + y * math.sin(a)
        if rng.random() < 0.5:
            m = (np.floor(u / period) % 2).astype(np.float32)
        else:
            v = -x * math.sin(a) + y * math.cos(a)
            m = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        c0, c1 = np.array(rand_color(rng), np.float32), np.array(rand_color(rng), np.float32)
        arr = c0 * (1 - m[..., None]) + c1 * m[..., None]
        return Image.fromarray(arr.astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))
    if kind == 3:  # blobs
        im = Image.new("RGB", (S, S), rand_color(rng))
        d = ImageDraw.Draw(im)
        for _ in range(rng.integers(5, 25)):
            x0, y0 = rng.integers(-S // 4, S, 2)
            w, h = rng.integers(S // 10, S // 2, 2)
            d.ellipse([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=rand_color(rng))
        return im.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 4)))
    # flat colour with grain
    arr = np.array(rand_color(rng), np.float32) + rng.normal(0, rng.uniform(2, 20), (S, S, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def photo_crop(rng, src, W, H):
    sw, sh = src.size
    side = min(sw, sh)
    cw = int(side * rng.uniform(0.25, 1.0))
    ch = min(sh, int(cw * H / W))
    cw = min(sw, cw)
    x0 = int(rng.integers(0, sw - cw + 1))
    y0 = int(rng.integers(0, sh - ch + 1))
    im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((W, H), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return im


def background(rng, S):
    photo_list, walls = photos()
    r = rng.random()
    if r < 0.45 and photo_list:
        im = photo_crop(rng, photo_list[int(rng.integers(len(photo_list)))], S, S)
    elif r < 0.6 and walls:
        im = photo_crop(rng, walls[int(rng.integers(len(walls)))], S, S)
    else:
        im = procedural(rng, S)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.3))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.4))
    return im


def jitter_glyph(rng, g, side, rot, strong=True):
    """Scale g so its longer side is `side`, colour-jitter and rotate it."""
    w, h = g.size
    k = side / max(w, h)
    g = g.resize((max(2, int(round(w * k))), max(2, int(round(h * k)))), Image.LANCZOS)
    if rng.random() < 0.5:
        g = g.transpose(Image.FLIP_LEFT_RIGHT)
    rgb, a = g.convert("RGB"), g.getchannel("A")
    rgb = ImageEnhance.Brightness(rgb).enhance(rng.uniform(0.65, 1.3))
    rgb = ImageEnhance.Contrast(rgb).enhance(rng.uniform(0.7, 1.3))
    rgb = ImageEnhance.Color(rgb).enhance(rng.uniform(0.5, 1.5))
    if strong and rng.random() < 0.3:  # small hue rotation
        hsv = np.asarray(rgb.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(-12, 13))) % 256
        rgb = Image.fromarray(hsv, "HSV").convert("RGB")
    g = rgb.copy()
    g.putalpha(a)
    return g.rotate(rot, resample=Image.BICUBIC, expand=True)


def paste(canvas, layer_mask, g, cx, cy):
    """Alpha-composites g centred at (cx, cy); returns its full-canvas alpha."""
    S_w, S_h = canvas.size
    x0, y0 = int(round(cx - g.size[0] / 2)), int(round(cy - g.size[1] / 2))
    full = Image.new("L", (S_w, S_h), 0)
    full.paste(g.getchannel("A"), (x0, y0))
    canvas.paste(g.convert("RGB"), (x0, y0), g.getchannel("A"))
    return np.asarray(full)


def random_shape(rng, S, size):
    """An RGBA plain shape (occluder or distractor)."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    col = rand_color(rng) + (255,)
    k = rng.integers(0, 4)
    if k == 0:
        d.rectangle([0, size * rng.uniform(0, 0.4), size - 1, size * rng.uniform(0.6, 1) - 1], fill=col)
    elif k == 1:
        d.ellipse([0, 0, size - 1, size - 1], fill=col)
    elif k == 2:
        pts = [(float(x), float(y)) for x, y in rng.uniform(0, size, (int(rng.integers(3, 7)), 2))]
        d.polygon(pts, fill=col)
    else:  # bar
        d.rectangle([0, size * 0.4, size - 1, size * 0.6], fill=col)
    return im


def make_image(rng, cls, W, H=None, bg=None, region=None):
    """One composited image of class index cls.  Returns (RGB image, mask uint8).

    region: (x0, y0, x1, y1) where the object's centre must fall (default the
    whole canvas, keeping >= ~85% of the object inside)."""
    H = H or W
    S = min(W, H)
    canvas = bg.copy() if bg is not None else background(rng, S)
    if canvas.size != (W, H):
        canvas = canvas.resize((W, H), Image.BILINEAR)
    cp = CLASSES[cls][1]
    side = S * rng.uniform(0.32, 0.72)
    rot = rng.uniform(-35, 35)
    obj = jitter_glyph(rng, glyph(cp), side, rot)
    ow, oh = obj.size
    rx0, ry0, rx1, ry1 = region or (0, 0, W, H)
    mx, my = 0.35 * ow, 0.35 * oh
    cx = rng.uniform(max(rx0, mx), max(max(rx0, mx) + 1, min(rx1, W - mx)))
    cy = rng.uniform(max(ry0, my), max(max(ry0, my) + 1, min(ry1, H - my)))

    # distractors behind the object
    n_dis = int(rng.choice([0, 1, 1, 2, 2, 3]))
    front = []
    for _ in range(n_dis):
        if rng.random() < 0.8:
            d = jitter_glyph(rng, glyph(DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]),
                             S * rng.uniform(0.2, 0.55), rng.uniform(-40, 40))
        else:
            d = random_shape(rng, S, int(S * rng.uniform(0.12, 0.35)))
        dx, dy = rng.uniform(0, W), rng.uniform(0, H)
        if rng.random() < 0.5:
            paste(canvas, None, d, dx, dy)
        else:
            front.append((d, dx, dy))

    obj_alpha = paste(canvas, None, obj, cx, cy)
    mask = obj_alpha >= 128
    area = max(1, int(mask.sum()))

    # distractors in front may hide at most 25% of the object
    for d, dx, dy in front:
        for _try in range(6):
            full = Image.new("L", (W, H), 0)
            full.paste(d.getchannel("A"), (int(round(dx - d.size[0] / 2)), int(round(dy - d.size[1] / 2))))
            cover = np.asarray(full) >= 128
            if (mask & cover).sum() <= 0.25 * area:
                paste(canvas, None, d, dx, dy)
                mask &= ~cover
                break
            dx, dy = rng.uniform(0, W), rng.uniform(0, H)

    # an occluder over part of the object
    if rng.random() < 0.3:
        osz = int(side * rng.uniform(0.25, 0.5))
        occ = random_shape(rng, S, max(4, osz)).rotate(rng.uniform(0, 360), expand=True)
        ox = cx + rng.uniform(-0.45, 0.45) * ow
        oy = cy + rng.uniform(-0.45, 0.45) * oh
        full = Image.new("L", (W, H), 0)
        full.paste(occ.getchannel("A"), (int(round(ox - occ.size[0] / 2)), int(round(oy - occ.size[1] / 2))))
        cover = np.asarray(full) >= 128
        if (mask & cover).sum() <= 0.3 * area:
            paste(canvas, None, occ, ox, oy)
            mask &= ~cover

    # camera effects
    if rng.random() < 0.15:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * S / SIZE))
    if rng.random() < 0.25:
        arr = np.asarray(canvas, np.float32) + rng.normal(0, rng.uniform(2, 9), (H, W, 3))
        canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return canvas, (mask.astype(np.uint8) * 255)


def train_sample(seed, i):
    """Training/validation image i: rendered at 128 px, or larger and then
    resized to 128 px like torchvision's Resize (PIL bilinear, antialiased)."""
    rng = np.random.default_rng([seed, i])
    cls = int(rng.integers(len(CLASSES)))
    R = SIZE if rng.random() < 0.6 else int(rng.choice([160, 192, 224, 256, 320]))
    im, _ = make_image(rng, cls, R)
    if R != SIZE:
        im = im.resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(im, np.uint8), cls


def eval_sample(seed, i):
    """Held-out image i (class i % n, balanced): a square image of 128-256 px
    with its mask at the same size."""
    rng = np.random.default_rng([seed, i])
    cls = i % len(CLASSES)
    R = int(rng.choice([128, 160, 192, 256]))
    im, mask = make_image(rng, cls, R)
    return im, mask, cls


def _gen_train(args):
    seed, lo, hi = args
    xs = np.empty((hi - lo, SIZE, SIZE, 3), np.uint8)
    ys = np.empty(hi - lo, np.int64)
    for i in range(lo, hi):
        xs[i - lo], ys[i - lo] = train_sample(seed, i)
    return xs, ys


def gen_train(seed, n, workers):
    chunks = [(seed, lo, min(n, lo + 500)) for lo in range(0, n, 500)]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_gen_train, chunks)
    else:
        parts = [_gen_train(c) for c in chunks]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def write_eval(out, seed, n, quality=92):
    """n images in camserve's eval layout under out; returns [(path, cls)]."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("".join(c[0] + "\n" for c in CLASSES))
    items = []
    for i in range(n):
        im, mask, cls = eval_sample(seed, i)
        d = os.path.join(out, CLASSES[cls][0])
        os.makedirs(d, exist_ok=True)
        stem = "%05d" % i
        p = os.path.join(d, stem + ".jpg")
        im.save(p, quality=quality)
        Image.fromarray(mask, "L").save(os.path.join(d, stem + ".mask.png"), optimize=True)
        items.append((p, cls))
    return items


# ---------------------------------------------------------------------------
# the network


def build_net(num_classes):
    import torch.nn as nn

    def cbr(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class Block(nn.Module):  # ResNet basic block
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(x + self.bn2(self.conv2(y)))

    class Net(nn.Module):
        """128 -> 32 (a 4x4 stride-4 patch stem) -> 16 -> 16: the last stage
        keeps stride 8, so the last block's output (128 x 16 x 16) is the
        Grad-CAM layer.  (An earlier version downsampled once more, to an 8 x 8
        layer at stride 16, whose upsampled maps peak at 16-px cell centres and
        missed thin objects: pointing game 88.8 %.)"""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 4, 4, 0, bias=False), nn.BatchNorm2d(32),
                                      nn.ReLU(inplace=True))
            self.layer1 = nn.Sequential(cbr(32, 64, 2), Block(64))
            self.layer2 = nn.Sequential(cbr(64, 128, 1), Block(128))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(128, num_classes)

        def forward(self, x):
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(self.pool(x).flatten(1))

    return Net()


def to_tensor(x_uint8):
    import torch
    x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - m) / s


def torchvision_eval(model, items):
    """Accuracy of model on files, preprocessed by torchvision as the sidecar says."""
    import torch
    from torchvision import transforms
    tf = transforms.Compose([transforms.Resize(SIZE), transforms.CenterCrop(SIZE), transforms.ToTensor(),
                             transforms.Normalize(MEAN, STD)])
    correct, preds = 0, []
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(items), 100):
            batch = items[lo:lo + 100]
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p, _ in batch])
            pr = model(x).argmax(1).tolist()
            preds += pr
            correct += sum(int(a == c) for a, (_, c) in zip(pr, batch))
    return correct / len(items), preds


def train(args):
    import torch
    import torch.nn as nn
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    xtr, ytr = gen_train(SEED_TRAIN + args.seed, args.train, args.workers)
    xva, yva = gen_train(SEED_VAL + args.seed, args.val, args.workers)
    t_gen = time.time() - t0
    print("data: %d train + %d val images in %.0f s" % (len(xtr), len(xva), t_gen), flush=True)

    net = build_net(len(CLASSES))
    nparams = sum(p.numel() for p in net.parameters())
    steps_per_epoch = len(xtr) // args.batch
    total = steps_per_epoch * args.epochs
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.15)
    lossf = nn.CrossEntropyLoss(label_smoothing=0.05)
    g = torch.Generator().manual_seed(args.seed)
    ytr_t = torch.from_numpy(ytr)
    print("net: %d parameters; %d epochs x %d steps" % (nparams, args.epochs, steps_per_epoch), flush=True)
    for ep in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=g).numpy()
        t1, seen, run_loss = time.time(), 0, 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            x = to_tensor(xtr[idx])
            flip = torch.rand(len(idx), generator=g) < 0.5
            x[flip] = x[flip].flip(3)
            y = ytr_t[idx]
            loss = lossf(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            run_loss += loss.item()
        net.eval()
        with torch.no_grad():
            pv = torch.cat([net(to_tensor(xva[i:i + 256])).argmax(1) for i in range(0, len(xva), 256)])
        acc = (pv.numpy() == yva).mean()
        args.history.append({"epoch": ep + 1, "loss": run_loss / steps_per_epoch, "val_acc": float(acc),
                             "img_per_s": seen / (time.time() - t1), "loadavg": os.getloadavg()})
        print("epoch %d: loss %.4f  val acc %.4f  (%.0f img/s, %.0f s elapsed)" %
              (ep + 1, run_loss / steps_per_epoch, acc, seen / (time.time() - t1), time.time() - t0), flush=True)
    return net, t0


def export(net, out_dir):
    import torch
    os.makedirs(out_dir, exist_ok=True)
    net.eval()
    path = os.path.join(out_dir, "model.onnx")
    torch.onnx.export(net, torch.zeros(1, 3, SIZE, SIZE), path, opset_version=13,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True)
    write_config(out_dir)
    print("exported %s (%d bytes)" % (path, os.path.getsize(path)), flush=True)
    return path


def write_config(out_dir):
    """labels.txt, the model.json sidecar, and the same preprocessing JSON as
    ONNX metadata "camserve.preprocess" (so a buffer-loaded copy of the model
    knows its preprocessing without the sidecar)."""
    import onnx
    path = os.path.join(out_dir, "model.onnx")
    cfg = {"labels": "labels.txt", "resize": SIZE, "crop": SIZE, "interpolation": "bilinear",
           "mean": MEAN, "std": STD, "channel_order": "RGB"}
    with open(os.path.join(out_dir, "labels.txt"), "w") as f:
        f.write("".join(c[0] + "\n" for c in CLASSES))
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    model = onnx.load(path)
    del model.metadata_props[:]
    e = model.metadata_props.add()
    e.key, e.value = "camserve.preprocess", json.dumps(cfg)
    onnx.checker.check_model(model)
    onnx.save(model, path)


# ---------------------------------------------------------------------------
# samples for the web gallery and the committed small eval set


def write_small_eval(out, n_per_class=3):
    """tests/data/eval_small: n_per_class per class, 128 px, JPEG q85."""
    import shutil
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("".join(c[0] + "\n" for c in CLASSES))
    for i in range(n_per_class * len(CLASSES)):
        rng = np.random.default_rng([SEED_SMALL, i])
        cls = i % len(CLASSES)
        im, mask = make_image(rng, cls, SIZE)
        d = os.path.join(out, CLASSES[cls][0])
        os.makedirs(d, exist_ok=True)
        im.save(os.path.join(d, "%02d.jpg" % i), quality=85)
        Image.fromarray(mask, "L").save(os.path.join(d, "%02d.mask.png" % i), optimize=True)


def write_samples(out):
    """web/samples: 12 JPEGs (one per class), 320 px or a whole darknet photo
    with the object composited in its centre square; index.json lists them."""
    os.makedirs(out, exist_ok=True)
    for old in glob.glob(os.path.join(out, "*.jpg")):
        os.remove(old)
    photo_list, _ = photos()
    names = [os.path.splitext(os.path.basename(p))[0] for p in photo_paths()[0]]
    index = []
    for cls, (label, _) in enumerate(CLASSES):
        rng = np.random.default_rng([SEED_SAMPLES, cls])
        if cls % 3 == 0 and photo_list:  # four samples on a whole real photo
            k = (cls // 3) % len(photo_list)
            src = photo_list[k]
            W = 400
            H = int(round(src.size[1] * W / src.size[0]))
            bg = src.resize((W, H), Image.BILINEAR)
            S = min(W, H)
            x0, y0 = (W - S) // 2, (H - S) // 2
            im, _ = make_image(rng, cls, W, H, bg=bg, region=(x0 + S * 0.3, y0 + S * 0.3, x0 + S * 0.7, y0 + S * 0.7))
            name = "%s_on_%s.jpg" % (label, names[k])
        else:
            im, _ = make_image(rng, cls, 320)
            name = "%s.jpg" % label
        q = 88
        while True:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=q)
            if buf.tell() <= 40000 or q <= 50:
                break
            q -= 6
        with open(os.path.join(out, name), "wb") as f:
            f.write(buf.getvalue())
        index.append({"file": name, "label": label})
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--eval-only", metavar="DIR", help="only write the held-out set (eval layout) to DIR")
    ap.add_argument("--eval-n", type=int, default=1200, help="held-out images (balanced over the classes)")
    ap.add_argument("--samples-only", action="store_true", help="only write web/samples and tests/data/eval_small")
    ap.add_argument("--no-samples", action="store_true")
    ap.add_argument("--eval-dir", default="/tmp/camserve-default-eval",
                    help="where training writes the held-out set it measures (not committed)")
    ap.add_argument("--train", type=int, default=22000)
    ap.add_argument("--val", type=int, default=1200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="processes generating data (result independent)")
    ap.add_argument("--report", help="write a JSON report of the run here")
    args = ap.parse_args()

    if args.eval_only:
        t = time.time()
        items = write_eval(args.eval_only, SEED_EVAL + args.seed, args.eval_n)
        print("wrote %d held-out images to %s in %.0f s" % (len(items), args.eval_only, time.time() - t))
        return
    if args.samples_only:
        write_samples(os.path.join(ROOT, "web", "samples"))
        write_small_eval(os.path.join(ROOT, "tests", "data", "eval_small"))
        print("wrote web/samples and tests/data/eval_small")
        return

    args.history = []
    load0 = os.getloadavg()
    net, t0 = train(args)
    t_train = time.time() - t0
    path = export(net, args.out)
    items = write_eval(args.eval_dir, SEED_EVAL + args.seed, args.eval_n)
    acc, preds = torchvision_eval(net, items)
    t_all = time.time() - t0
    print("held-out accuracy (PyTorch, %d images from %s): %.4f" % (len(items), args.eval_dir, acc))
    print("time: %.0f s data+training, %.0f s in all" % (t_train, t_all))
    if not args.no_samples:
        write_samples(os.path.join(ROOT, "web", "samples"))
        write_small_eval(os.path.join(ROOT, "tests", "data", "eval_small"))
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"heldout_accuracy": acc, "heldout_n": len(items), "seconds_train": t_train,
                       "seconds_total": t_all, "onnx_bytes": os.path.getsize(path),
                       "epochs": args.history, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                       "preds": preds, "files": [os.path.relpath(p, args.eval_dir) for p, _ in items]}, f)


if __name__ == "__main__":
    sys.exit(main())
