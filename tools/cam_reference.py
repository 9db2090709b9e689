#!/usr/bin/python3
"""Reference CAM maps for tests/unit/test_cam.c, written to tests/golden/cam/.

Evaluates pytorch-grad-cam's formulas (base_cam.py, grad_cam.py,
grad_cam_plusplus.py, xgrad_cam.py, hirescam.py, layer_cam.py,
grad_cam_elementwise.py, eigen_cam.py, eigen_grad_cam.py, score_cam.py,
ablation_cam.py, ablation_layer.py, utils/svd_on_activations.py,
utils/image.py) in NumPy on seeded random float32 tensors.  pytorch-grad-cam
itself is not needed: its definitions are restated below.

The expected maps are computed in float64 from the float32 inputs (the value
pytorch-grad-cam approximates in float32); each method is also evaluated the
way pytorch-grad-cam does it, in float32, and the two must agree to 1e-5, so
the float64 reference stands for pytorch-grad-cam's output.

Deviation on purpose: the sign of the SVD vector (LAPACK's is arbitrary) is
fixed by the rule documented in docs/cam.md and src/cam/eigen.c.

Usage: /usr/bin/python3 tools/cam_reference.py [--out tests/golden/cam]
"""
import argparse
import os

import numpy as np
import torch

F32 = np.float32
GRAD_METHODS = ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam",
                "gradcamelementwise", "eigencam", "eigengradcam"]
WEIGHTED = {"gradcam", "gradcampp", "xgradcam"}


# ---- get_2d_projection with camserve's sign rule --------------------------
def fix_sign(p, x):
    """Orient p to correlate positively with the channel sum of x (c, hw);
    when that correlation is negligible, make p's largest-|.| element
    positive (first index on ties)."""
    s = x.sum(axis=0)
    sc = s - s.mean()
    corr = float(p @ sc)
    if abs(corr) > 1e-6 * np.linalg.norm(p) * np.linalg.norm(sc):
        return p if corr > 0 else -p
    i = int(np.argmax(np.abs(p)))
    return p if p[i] >= 0 else -p


def projection(batch, dtype=np.float64):
    """get_2d_projection: per image, (hw, c) minus column means, times the
    first right singular vector."""
    out = []
    for x in batch:
        x = np.nan_to_num(np.asarray(x, dtype=dtype), nan=0.0)
        c = x.shape[0]
        flat = x.reshape(c, -1)
        a = flat.T
        a = a - a.mean(axis=0)
        _, _, vt = np.linalg.svd(a, full_matrices=True)
        p = a @ vt[0, :]
        out.append(fix_sign(p, flat).reshape(x.shape[1:]))
    return np.array(out)


# ---- the methods (get_cam_image), any dtype -------------------------------
def cam_image(method, act, grad, eigen_smooth, dtype):
    a = act.astype(dtype)
    g = grad.astype(dtype) if grad is not None else None
    if method in WEIGHTED:
        if method == "gradcam":
            w = g.mean(axis=(2, 3))
        elif method == "gradcampp":
            g2 = g ** 2
            g3 = g2 * g
            s = a.sum(axis=(2, 3))
            aij = g2 / (2 * g2 + s[:, :, None, None] * g3 + dtype(1e-6))
            aij = np.where(g != 0, aij, 0)
            w = (np.maximum(g, 0) * aij).sum(axis=(2, 3))
        else:  # xgradcam
            s = a.sum(axis=(2, 3))
            w = (g * a / (s[:, :, None, None] + dtype(1e-7))).sum(axis=(2, 3))
        return weighted_cam(a, w.astype(dtype), eigen_smooth, dtype)
    if method == "eigencam":
        return projection(a, dtype)
    if method == "eigengradcam":
        return projection(g * a, dtype)
    if method == "hirescam":
        x = g * a
    elif method == "layercam":
        x = np.maximum(g, 0) * a
    elif method == "gradcamelementwise":
        x = np.maximum(g * a, 0)
    else:
        raise ValueError(method)
    return projection(x, dtype) if eigen_smooth else x.sum(axis=1)


def weighted_cam(a, w, eigen_smooth, dtype):
    x = w[:, :, None, None] * a
    return projection(x, dtype) if eigen_smooth else x.sum(axis=1)


def scale(cams):
    """scale_cam_image without target_size."""
    out = []
    for m in cams:
        m = m - np.min(m)
        m = m / (1e-7 + np.max(m))
        out.append(m)
    return np.array(out)


# ---- cv2.resize INTER_LINEAR for float32, restated ------------------------
def cv2_taps(dn, sn):
    sc = 1.0 / (dn / sn)
    f = ((np.arange(dn) + 0.5) * sc - 0.5).astype(F32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(F32)).astype(F32)
    lo = s < 0
    s[lo], f[lo] = 0, 0
    hi = s >= sn - 1
    s[hi], f[hi] = sn - 1, 0
    return s, np.minimum(s + 1, sn - 1), (F32(1) - f).astype(F32), f


def cv2_resize(src, dh, dw):
    src = src.astype(F32)
    y0, y1, b0, b1 = cv2_taps(dh, src.shape[0])
    x0, x1, a0, a1 = cv2_taps(dw, src.shape[1])
    hz = src[:, x0] * a0 + src[:, x1] * a1
    return (hz[y0] * b0[:, None] + hz[y1] * b1[:, None]).astype(F32)


def torch_bilinear(src, dh, dw, align_corners):
    t = torch.from_numpy(src.astype(F32))[None, None]
    return torch.nn.functional.interpolate(t, size=(dh, dw), mode="bilinear",
                                           align_corners=align_corners)[0, 0].numpy()


def aggregate(raws, dh, dw):
    """compute_cam_per_layer's scale+resize, then aggregate_multi_layers."""
    per_layer = []
    for raw in raws:
        per_layer.append(np.array([cv2_resize(m, dh, dw) for m in scale(raw).astype(F32)]))
    stack = np.maximum(np.stack(per_layer, axis=1), 0)
    return scale(stack.mean(axis=1))


# ---- data -----------------------------------------------------------------
def make_pair(rng, n, c, h, w, signed=False):
    act = rng.standard_normal((n, c, h, w))
    act = (act if signed else np.maximum(act, 0)).astype(F32)
    grad = (0.1 * rng.standard_normal((n, c, h, w))).astype(F32)
    grad[rng.random(grad.shape) < 0.1] = 0  # exact zeros: GradCAM++'s where()
    return act, grad


def check_close(name, a, b, tol):
    d = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
    print(f"  {name:40s} max|diff| = {d:.2e}")
    assert d <= tol, (name, d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..",
                                                  "tests", "golden", "cam"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def save(name, arr):
        np.save(os.path.join(args.out, name + ".npy"), np.ascontiguousarray(arr, dtype=F32))

    rng = np.random.default_rng(20261127)
    # "main": h*w (49) <= c (64): the Gram is hw x hw, Lanczos restarts (49 > 32).
    # "wide": c (16) < h*w (81): the Gram is c x c; signed activations (a
    # layer before its ReLU), which LayerCAM and GradCAMElementWise tell apart.
    sets = {"main": make_pair(rng, 2, 64, 7, 7), "wide": make_pair(rng, 2, 16, 9, 9, True)}
    raws = {}
    print("gradient methods (float64 reference vs pytorch-grad-cam in float32):")
    for sname, (act, grad) in sets.items():
        save(f"{sname}_act", act)
        save(f"{sname}_grad", grad)
        for m in GRAD_METHODS:
            for es in (0, 1):
                if es and m.startswith("eigen"):
                    continue
                cam64 = cam_image(m, act, grad, es, np.float64)
                cam32 = cam_image(m, act, grad, es, np.float32)
                raw = np.maximum(cam64, 0)
                exp = scale(raw)
                # GradCAM++ on signed activations: its denominator
                # 2g^2 + sum(A) g^3 + eps nearly cancels for some elements,
                # and pytorch-grad-cam's float32 drifts ~1e-5 from the exact
                # value (camserve computes it in double).
                tol = 5e-5 if (m == "gradcampp" and sname == "wide") else 1e-5
                check_close(f"{sname} {m} eigen_smooth={es}", exp,
                            scale(np.maximum(cam32, 0)), tol)
                save(f"{sname}_{m}_es{es}", exp)
                if es == 0:
                    raws[(sname, m)] = raw
                    save(f"{sname}_{m}_raw", raw)

    # EigenCAM at a ResNet-like size: c=256 at 14x14, Lanczos on a 196 x 196 Gram.
    big = np.maximum(rng.standard_normal((1, 256, 14, 14)), 0).astype(F32)
    save("big_act", big)
    exp = scale(np.maximum(projection(big), 0))
    check_close("big eigencam", exp, scale(np.maximum(projection(big, np.float32), 0)), 1e-5)
    save("big_eigencam", exp)

    # Resize: cv2 INTER_LINEAR, and the claim that torch's bilinear
    # (align_corners=False, antialias=False) matches it up and down.
    print("resize (cv2 INTER_LINEAR restated vs torch bilinear align_corners=False):")
    cases = [(7, 7, 32, 30), (14, 14, 5, 6), (7, 7, 14, 14), (1, 5, 3, 4), (5, 9, 17, 11),
             (6, 8, 3, 4), (9, 9, 9, 9)]
    for i, (sh, sw, dh, dw) in enumerate(cases):
        src = rng.standard_normal((sh, sw)).astype(F32)
        dst = cv2_resize(src, dh, dw)
        check_close(f"resize {sh}x{sw} -> {dh}x{dw}", dst, torch_bilinear(src, dh, dw, False), 1e-5)
        save(f"resize{i}_src", src)
        save(f"resize{i}_dst", dst)

    # Multi-layer aggregation: GradCAM at two layers to a 30 x 32 target, and
    # one layer to the input size (pytorch-grad-cam's single-layer output).
    save("agg2", aggregate([raws[("main", "gradcam")], raws[("wide", "gradcam")]], 30, 32))
    save("agg1", aggregate([raws[("main", "gradcam")]], 28, 28))

    # ScoreCAM on a linear "model": logits = W x + bias, target = logit.
    act, _ = sets["main"]
    n, c, h, w = act.shape
    inp = rng.standard_normal((n, 3, 16, 16)).astype(F32)
    W = (0.1 * rng.standard_normal((3, 3, 16, 16))).astype(F32)
    bias = rng.standard_normal(3).astype(F32)
    cls = np.array([2, 0])
    save("score_input", inp)
    save("score_W", W)
    save("score_bias", bias)
    save("score_class", cls)
    with torch.no_grad():
        up = torch.nn.UpsamplingBilinear2d(size=inp.shape[-2:])(torch.from_numpy(act))
        maxs = up.view(n, c, -1).max(dim=-1)[0][:, :, None, None]
        mins = up.view(n, c, -1).min(dim=-1)[0][:, :, None, None]
        up = (up - mins) / (maxs - mins + 1e-8)
        masked = (torch.from_numpy(inp)[:, None] * up[:, :, None]).numpy()
    scores = np.stack([np.einsum("kchw,chw->k", masked[b].astype(np.float64),
                                 W[cls[b]].astype(np.float64)) + bias[cls[b]]
                       for b in range(n)])
    wts = torch.softmax(torch.from_numpy(scores.astype(F32)), dim=-1).numpy()
    save("scorecam", scale(np.maximum(weighted_cam(act.astype(np.float64),
                                                   wts.astype(np.float64), 0, np.float64), 0)))

    # AblationCAM with a head "mean over space of relu(A), then linear":
    # image 0 has min(A) == 0 (channels are zeroed), image 1 is shifted
    # negative (channels get min - (j+1)*1e7, AblationLayer's running min).
    abl = act.copy()
    abl[1] -= F32(0.3)
    V = rng.standard_normal((3, c)).astype(F32)
    vb = (1.0 + rng.random(3)).astype(F32)
    save("abl_act", abl)
    save("abl_V", V)
    save("abl_vb", vb)

    def head(a, t):  # a: k x c x h x w
        return np.maximum(a.astype(np.float64), 0).mean(axis=(2, 3)) @ V[t] + vb[t]

    batch = 32
    weights = np.zeros((n, c), F32)
    values = np.zeros((n, c), F32)
    for b in range(n):
        orig = F32(head(abl[b:b + 1], cls[b])[0])
        new = []
        for i in range(0, c, batch):
            k = min(batch, c - i)
            out = torch.from_numpy(abl[b]).clone().unsqueeze(0).repeat(k, 1, 1, 1)
            for j in range(k):  # AblationLayer.__call__ with indices i..i+k-1
                if torch.min(out) == 0:
                    out[j, i + j, :] = 0
                else:
                    out[j, i + j, :] = torch.min(out) - 1e7
                values[b, i + j] = out[j, i + j, 0, 0]
            new.extend(head(out.numpy(), cls[b]))
        new = np.float32(new)
        weights[b] = (orig - new) / orig
    save("abl_values", values)
    save("ablationcam", scale(np.maximum(weighted_cam(abl.astype(np.float64),
                                                      weights.astype(np.float64), 0,
                                                      np.float64), 0)))
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {len(os.listdir(args.out))} files, {total} bytes, to {args.out}")


if __name__ == "__main__":
    main()
