#!/usr/bin/python3
"""Golden test data for camserve: small random-weight torchvision CNNs exported
to ONNX, with PyTorch logits and Grad-CAM-family reference maps.

    /usr/bin/python3 tools/make_golden.py --out tests/golden --float64
    /usr/bin/python3 tools/make_golden.py --full /tmp/camserve-full --threads 2 --float64  # real sizes

--float64 also writes float64 references (the same model .double(), the same
input) and how far PyTorch float32 is and can be from them (docs/cam.md,
"Float64 reference"); without it the output is the float32 references alone.

Needs Debian's torch 1.13 / torchvision 0.14 / onnx 1.12 (/usr/bin/python3).
Never downloads weights: every model is built from torchvision's own classes
with random (seeded) weights.  BatchNorm affine parameters *and* running
statistics are randomised so that BN folding in the engine is really tested.

If bench/node_modules/onnxruntime-node is installed (see bench/README.md) every
exported file is also run through ONNX Runtime and the logits and the two
chosen layer tensors are compared with PyTorch (--no-ort to skip).

See tools/README.md for the file layout and the CAM formulas.
"""
import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import partial

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models import resnet as tv_resnet
from torchvision.models import squeezenet as tv_squeeze
import importlib
tv_googlenet = importlib.import_module("torchvision.models.googlenet")  # name shadowed by the function
from torchvision.models import inception as tv_inception
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.models.densenet import DenseNet
from torchvision.models.efficientnet import (EfficientNet, FusedMBConvConfig,
                                             MBConvConfig, _efficientnet_conf)
from torchvision.models.mnasnet import MNASNet
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.shufflenetv2 import ShuffleNetV2
from torchvision.models.vgg import VGG, make_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20261127
BATCH = 2
NUM_CLASSES = 10
CAM_METHODS = ["gradcam", "hirescam", "gradcampp", "xgradcam", "layercam",
               "gradcam_elementwise"]


# --------------------------------------------------------------------------
# Reduced-size members of each torchvision family.  Where the torchvision
# constructor hard-codes channel counts, a thin subclass / scaled conv block
# rebuilds the same module tree (same attribute names, so the ONNX node
# scopes look exactly like the real models') with fewer channels.
# --------------------------------------------------------------------------

class SmallResNet(tv_resnet.ResNet):
    """torchvision ResNet with configurable stage widths (ResNet.__init__
    hard-codes 64/128/256/512).  Reuses ResNet._make_layer and forward."""

    def __init__(self, block, layers, planes=(16, 32, 64, 128), num_classes=10,
                 groups=1, width_per_group=64):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = planes[0]
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class SmallSqueezeNet(tv_squeeze.SqueezeNet):
    """SqueezeNet 1.1 layout with channels / 4 (torchvision's Fire modules)."""

    def __init__(self, num_classes=10):
        nn.Module.__init__(self)
        self.num_classes = num_classes
        Fire = tv_squeeze.Fire
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(16, 4, 16, 16),
            Fire(32, 4, 16, 16),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(32, 8, 32, 32),
            Fire(64, 8, 32, 32),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 12, 48, 48),
            Fire(96, 12, 48, 48),
            Fire(96, 16, 64, 64),
            Fire(128, 16, 64, 64),
        )
        final_conv = nn.Conv2d(128, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)


def scaled_conv_block(base, div):
    """A conv block class that divides every channel count by `div` (except the
    3 RGB input channels), so GoogLeNet / Inception3 can be built small with
    torchvision's own Inception modules."""

    class Scaled(base):
        def __init__(self, in_channels, out_channels, **kwargs):
            assert (in_channels == 3 or in_channels % div == 0) and out_channels % div == 0, \
                (in_channels, out_channels, div)
            super().__init__(in_channels if in_channels == 3 else in_channels // div,
                             out_channels // div, **kwargs)

    Scaled.__name__ = base.__name__
    return Scaled


def build_resnet_basic():
    return SmallResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], planes=(16, 24, 40, 64))


def build_resnet_bottleneck():
    return SmallResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], planes=(8, 12, 20, 32))


def build_resnext():
    # ResNeXt: grouped 3x3 convs (groups=4, width_per_group=8)
    return SmallResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], planes=(8, 16, 24, 32),
                       groups=4, width_per_group=32)


def build_wide_resnet():
    # Wide ResNet: bottleneck width doubled (width_per_group=128)
    return SmallResNet(tv_resnet.Bottleneck, [1, 1, 1, 1], planes=(8, 12, 16, 24),
                       width_per_group=128)


def build_mobilenet_v2():
    setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 1, 2],
               [6, 96, 1, 1], [6, 160, 1, 2], [6, 320, 1, 1]]
    m = MobileNetV2(num_classes=NUM_CLASSES, width_mult=0.25,
                    inverted_residual_setting=setting, round_nearest=8)
    return m


def build_mobilenet_v3():
    setting, last = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.5, reduced_tail=True)
    setting = setting[:6] + setting[8:10]  # fewer repeats; keeps SE, HS and RE blocks
    setting[6].input_channels = setting[5].out_channels
    return MobileNetV3(setting, 128, num_classes=NUM_CLASSES)


def build_efficientnet_b0():
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.3)
    return EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2,
                        num_classes=NUM_CLASSES, last_channel=last)


def build_efficientnet_v2():
    setting = [
        FusedMBConvConfig(1, 3, 1, 8, 8, 1),
        FusedMBConvConfig(4, 3, 2, 8, 16, 2),
        FusedMBConvConfig(4, 3, 2, 16, 24, 1),
        MBConvConfig(4, 3, 2, 24, 32, 2),
        MBConvConfig(6, 3, 1, 32, 48, 1),
    ]
    return EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.2,
                        num_classes=NUM_CLASSES, last_channel=128,
                        norm_layer=partial(nn.BatchNorm2d, eps=1e-03))


def build_densenet():
    return DenseNet(growth_rate=8, block_config=(2, 2, 3, 2), num_init_features=16,
                    bn_size=2, num_classes=NUM_CLASSES)


def build_squeezenet():
    return SmallSqueezeNet(num_classes=NUM_CLASSES)


def build_vgg_bn():
    cfg = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]  # vgg11 / 8
    m = VGG(make_layers(cfg, batch_norm=True), num_classes=NUM_CLASSES, init_weights=True)
    # 64 px input -> 2x2 feature map; pool to 2x2 (like 7x7 -> 7x7 at 224 px) and
    # a narrower classifier with the same Linear-ReLU-Dropout structure.
    m.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    m.classifier = nn.Sequential(
        nn.Linear(64 * 2 * 2, 64), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(64, NUM_CLASSES))
    for mod in m.classifier:
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, 0, 0.05)
    return m


def build_shufflenet_v2():
    return ShuffleNetV2([2, 2, 1], [16, 32, 64, 128, 256], num_classes=NUM_CLASSES)


def build_regnet():
    bp = BlockParams(depths=[1, 1, 2, 1], widths=[16, 24, 48, 96], group_widths=[8, 8, 8, 8],
                     bottleneck_multipliers=[1.0] * 4, strides=[2, 2, 2, 2], se_ratio=0.25)
    return RegNet(bp, num_classes=NUM_CLASSES, stem_width=16)


def build_mnasnet():
    return MNASNet(alpha=0.15, num_classes=NUM_CLASSES)


def build_googlenet():
    conv = scaled_conv_block(tv_googlenet.BasicConv2d, 8)
    m = tv_googlenet.GoogLeNet(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False,
                               init_weights=True,
                               blocks=[conv, partial(tv_googlenet.Inception, conv_block=conv),
                                       tv_googlenet.InceptionAux])
    m.fc = nn.Linear(1024 // 8, NUM_CLASSES)
    return m


def build_inception_v3():
    conv = scaled_conv_block(tv_inception.BasicConv2d, 16)
    m = tv_inception.Inception3(
        num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=True,
        inception_blocks=[conv] + [partial(b, conv_block=conv) for b in (
            tv_inception.InceptionA, tv_inception.InceptionB, tv_inception.InceptionC,
            tv_inception.InceptionD, tv_inception.InceptionE)] + [tv_inception.InceptionAux])
    m.fc = nn.Linear(2048 // 16, NUM_CLASSES)
    return m


def build_convnext():
    bs = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 48, 1), CNBlockConfig(48, 64, 2),
          CNBlockConfig(64, None, 1)]
    return ConvNeXt(bs, stochastic_depth_prob=0.1, layer_scale=1e-6, num_classes=NUM_CLASSES)


def densenet_tap(model, x):
    """DenseNet's last feature tensor is a functional F.relu in forward(), not a
    module output; re-run the (tiny) forward with the tap exposed."""
    feats = model.features(x)
    out = F.relu(feats)
    pooled = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
    return model.classifier(pooled), out


# Every family: builder, opset, input size, exporter settings, layers and the
# matching full-size torchvision model for --full.
#   export: "preserve" = TrainingMode.PRESERVE on an eval() model, keeps
#           BatchNormalization nodes in the graph (engine must fold them);
#           "eval" = the default TrainingMode.EVAL, torch folds Conv+BN itself.
#   fold:   do_constant_folding.
#   layers: module path (forward hook on that module), or a ("tap", fn,
#           onnx_node_name) for a functional tensor.
FAMILIES = {
    "resnet_basic": dict(build=build_resnet_basic, opset=11, size=64, export="preserve", fold=True,
                         default="layer4", middle="layer2", full=("resnet18", 224)),
    "resnet_bottleneck": dict(build=build_resnet_bottleneck, opset=12, size=64, export="preserve",
                              fold=True, default="layer4", middle="layer2", full=("resnet50", 224)),
    "resnext": dict(build=build_resnext, opset=13, size=64, export="preserve", fold=True,
                    default="layer4", middle="layer3", full=("resnext50_32x4d", 224)),
    "wide_resnet": dict(build=build_wide_resnet, opset=14, size=64, export="eval", fold=True,
                        default="layer4", middle="layer2", full=("wide_resnet50_2", 224)),
    "mobilenet_v2": dict(build=build_mobilenet_v2, opset=11, size=64, export="eval", fold=True,
                         default="features", middle="features.6", full=("mobilenet_v2", 224)),
    "mobilenet_v3": dict(build=build_mobilenet_v3, opset=14, size=64, export="preserve", fold=True,
                         default="features", middle="features.4", full=("mobilenet_v3_large", 224)),
    "efficientnet_b0": dict(build=build_efficientnet_b0, opset=13, size=64, export="preserve",
                            fold=True, default="features", middle="features.4",
                            full=("efficientnet_b0", 224)),
    "efficientnet_v2": dict(build=build_efficientnet_v2, opset=15, size=64, export="preserve",
                            fold=False, default="features", middle="features.3",
                            full=("efficientnet_v2_s", 224)),
    "densenet": dict(build=build_densenet, opset=12, size=64, export="preserve", fold=False,
                     default=("tap", densenet_tap, "/Relu"), middle="features.denseblock2",
                     full=("densenet121", 224)),
    "squeezenet": dict(build=build_squeezenet, opset=11, size=64, export="preserve", fold=True,
                       default="features", middle="features.6", full=("squeezenet1_0", 224)),
    "vgg_bn": dict(build=build_vgg_bn, opset=16, size=64, export="preserve", fold=True,
                   default="features", middle="features.10", full=("vgg11_bn", 224)),
    "shufflenet_v2": dict(build=build_shufflenet_v2, opset=13, size=64, export="preserve",
                          fold=False, default="conv5", middle="stage3",
                          full=("shufflenet_v2_x1_0", 224)),
    "regnet": dict(build=build_regnet, opset=15, size=64, export="eval", fold=True,
                   default="trunk_output", middle="trunk_output.block2",
                   full=("regnet_y_400mf", 224)),
    "mnasnet": dict(build=build_mnasnet, opset=16, size=64, export="preserve", fold=True,
                    default="layers", middle="layers.10", full=("mnasnet1_0", 224)),
    "googlenet": dict(build=build_googlenet, opset=14, size=96, export="eval", fold=True,
                      default="inception5b", middle="inception4a", full=("googlenet", 224)),
    # 139 px is the smallest size where Mixed_7c is 3x3 (80/96 px give 1x1,
    # where every CAM is a constant and scales to all zeros).
    "inception_v3": dict(build=build_inception_v3, opset=12, size=139, export="preserve",
                         fold=True, default="Mixed_7c", middle="Mixed_6e",
                         full=("inception_v3", 299)),
    "convnext": dict(build=build_convnext, opset=17, size=96, export="preserve", fold=True,
                     default="features", middle="features.3", full=("convnext_tiny", 224)),
}


# --full default set (one real architecture per family; add the rest with --only)
FULL_DEFAULT = ["resnet_bottleneck", "mobilenet_v2", "mobilenet_v3", "efficientnet_b0", "densenet",
                "squeezenet", "vgg_bn", "shufflenet_v2", "regnet", "mnasnet", "googlenet",
                "inception_v3", "convnext"]


def build_full(arch):
    kw = dict(weights=None)
    if arch in ("googlenet", "inception_v3"):
        kw.update(aux_logits=False, init_weights=True)
    return getattr(torchvision.models, arch)(**kw)


# --------------------------------------------------------------------------
# Randomisation: BN gamma/beta, then calibrate running stats on random data
# (so activations stay O(1) through the depth), then perturb running
# mean/var so they are far from (0, 1) and not the batch statistics.
# --------------------------------------------------------------------------

def randomise(model, size, gen):
    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    def uni(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    bns = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(uni(0.5, 1.5, m.num_features))
                m.bias.copy_(0.2 * rnd(m.num_features))
                m.reset_running_stats()
                bns.append((m, m.momentum))
                m.momentum = None  # cumulative average during calibration
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(uni(0.5, 1.5, *m.weight.shape))
                m.bias.copy_(0.2 * rnd(*m.bias.shape))
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(0.05 * rnd(*m.bias.shape))
            if hasattr(m, "layer_scale") and isinstance(m.layer_scale, nn.Parameter):
                m.layer_scale.copy_(uni(0.2, 1.0, *m.layer_scale.shape))
        if bns:
            model.train()
            for _ in range(2):
                model(rnd(8, 3, size, size))
            for m, mom in bns:
                std = m.running_var.sqrt()
                m.running_mean.add_(0.3 * std * rnd(m.num_features))
                m.running_var.mul_(uni(0.5, 2.0, m.num_features))
                m.momentum = mom
    model.eval()
    return model


# --------------------------------------------------------------------------
# Activations / gradients at a layer, via hooks (pytorch-grad-cam style).
# --------------------------------------------------------------------------

def get_module(model, path):
    m = model
    for p in path.split("."):
        m = getattr(m, p) if not p.isdigit() else m[int(p)]
    return m


def act_and_grad(model, x, spec, classes=None):
    """Forward, pick per-image top-1 (unless classes given), backward
    sum_i logits[i, c_i] (raw logits, no softmax) and return
    (logits, classes, activation, d score / d activation)."""
    store = {}
    x = x.clone().requires_grad_(True)
    if isinstance(spec, tuple):
        logits, t = spec[1](model, x)
        ref = model(x)
        assert torch.allclose(logits, ref, rtol=1e-5, atol=1e-5), "tap forward != model forward"
        store["act"] = t
        t.register_hook(lambda g: store.__setitem__("grad", g))
    else:
        def fwd_hook(mod, inp, out):
            store["act"] = out
            out.register_hook(lambda g: store.__setitem__("grad", g))
        h = get_module(model, spec).register_forward_hook(fwd_hook)
        try:
            logits = model(x)
        finally:
            h.remove()
    if classes is None:
        classes = logits.detach().argmax(1)
    score = logits.gather(1, classes.view(-1, 1)).sum()
    model.zero_grad(set_to_none=True)
    score.backward()
    act = store["act"].detach().numpy()  # the model's dtype (float32, or float64 for --float64)
    grad = store["grad"].detach().numpy()
    assert act.ndim == 4 and grad.shape == act.shape, (act.shape, grad.shape)
    return logits.detach(), classes, act, grad


# --------------------------------------------------------------------------
# CAM references, pytorch-grad-cam semantics (jacobgil/pytorch-grad-cam:
# base_cam.py, grad_cam.py, hirescam.py, grad_cam_plusplus.py, xgrad_cam.py,
# layer_cam.py, grad_cam_elementwise.py, utils/svd_on_activations.py,
# utils/image.py).  A = activations (N,C,H,W), G = d score_c / d A.
# Computed in float64 from the saved float32 A and G, stored as float32.
# --------------------------------------------------------------------------

def cam_raw(method, A, G):
    A = A.astype(np.float64)
    G = G.astype(np.float64)
    if method == "gradcam":
        # GradCAM.get_cam_weights: w_c = mean_{h,w} G ; cam = sum_c w_c A_c
        w = G.mean(axis=(2, 3))
        return (w[:, :, None, None] * A).sum(axis=1)
    if method == "hirescam":
        # HiResCAM.get_cam_image: cam = sum_c (G * A)
        return (G * A).sum(axis=1)
    if method == "gradcampp":
        # GradCAMPlusPlus.get_cam_weights (eq. 19 of arXiv:1710.11063):
        #   g2 = G^2, g3 = G^3, s_c = sum_{h,w} A_c
        #   alpha = g2 / (2 g2 + s_c g3 + 1e-6), alpha = 0 where G == 0
        #   w_c = sum_{h,w} relu(G) * alpha ; cam = sum_c w_c A_c
        g2 = G ** 2
        g3 = g2 * G
        s = A.sum(axis=(2, 3))
        alpha = g2 / (2 * g2 + s[:, :, None, None] * g3 + 1e-6)
        alpha = np.where(G != 0, alpha, 0)
        w = (np.maximum(G, 0) * alpha).sum(axis=(2, 3))
        return (w[:, :, None, None] * A).sum(axis=1)
    if method == "xgradcam":
        # XGradCAM.get_cam_weights: w_c = sum_{h,w} G*A / (sum_{h,w} A + 1e-7)
        s = A.sum(axis=(2, 3))
        w = (G * A / (s[:, :, None, None] + 1e-7)).sum(axis=(2, 3))
        return (w[:, :, None, None] * A).sum(axis=1)
    if method == "layercam":
        # LayerCAM.get_cam_image: cam = sum_c relu(G) * A
        return (np.maximum(G, 0) * A).sum(axis=1)
    if method == "gradcam_elementwise":
        # GradCAMElementWise.get_cam_image: cam = sum_c relu(G * A)
        return np.maximum(G * A, 0).sum(axis=1)
    raise ValueError(method)


def eigen_raw(A):
    """get_2d_projection: per image, M = A reshaped (H*W, C), rows centred
    (M - M.mean(axis=0)), SVD M = U S VT, projection = M @ VT[0], reshaped to
    (H, W).  The SVD sign is arbitrary, so here (unlike upstream) the sign is
    fixed such that the projection's sum is >= 0."""
    A = A.astype(np.float64)
    out = []
    for a in A:
        c, h, w = a.shape
        m = a.reshape(c, h * w).T
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        p = (m @ vt[0]).reshape(h, w)
        if p.sum() < 0:
            p = -p
        out.append(p)
    return np.stack(out)


def scale_cam(cam):
    """BaseCAM.compute_cam_per_layer: cam = np.maximum(cam, 0), then
    utils.image.scale_cam_image per image: x = x - min(x); x = x / (1e-7 + max(x)).
    (No resize here: references stay at layer resolution.)"""
    cam = np.maximum(cam, 0)
    out = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        out.append(img)
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------
# ONNX side: export, find the tensor equal to a module's output.
# --------------------------------------------------------------------------

def export(model, x, path, opset, mode, fold):
    training = (torch.onnx.TrainingMode.PRESERVE if mode == "preserve"
                else torch.onnx.TrainingMode.EVAL)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, path, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          opset_version=opset, do_constant_folding=fold, training=training,
                          export_params=True)


def scope_prefix(path):
    """torch 1.13 (_setup_trace_module_map): each scope level is the module's
    qualified name from its last non-numeric atom on, e.g. module
    'features.6.block.0' -> '/features/features.6/block/block.0/'."""
    parts = path.split(".")
    levels = []
    for i in range(len(parts)):
        j = i
        while j > 0 and parts[j].isnumeric():
            j -= 1
        levels.append(".".join(parts[j:i + 1]))
    return "/" + "/".join(levels) + "/"


def find_tensor(graph, spec):
    """Name of the ONNX tensor equal to the output of module `spec` (torch 1.13
    names nodes '/a/a.b/a.b.c/Op' after the module scope): the tensors made
    inside that scope and read outside it.  If several, the last one made."""
    if isinstance(spec, tuple):
        names = [n.output[0] for n in graph.node if n.name == spec[2]]
        assert len(names) == 1, (spec[2], names)
        return names[0]
    pre = scope_prefix(spec)
    inside = [n for n in graph.node if n.name.startswith(pre)]
    assert inside, f"no ONNX node under scope {pre}"
    made = {}
    for i, n in enumerate(graph.node):
        if n.name.startswith(pre):
            for o in n.output:
                made[o] = i
    used_outside = set(o.name for o in graph.output)
    for n in graph.node:
        if not n.name.startswith(pre):
            used_outside.update(i for i in n.input if i in made)
    cands = sorted((made[t], t) for t in used_outside if t in made)
    assert cands, f"nothing leaves scope {pre}"
    return cands[-1][1]


def inferred_shapes(model):
    inf = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inf.graph.value_info) + list(inf.graph.output) + list(inf.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    return shapes


ORT_JS = r"""
const ort = require(process.argv[2]);
const fs = require('fs');
(async () => {
  const [model, inBin, dimsJson, outDir, ...names] = process.argv.slice(3);
  const dims = JSON.parse(dimsJson);
  const buf = fs.readFileSync(inBin);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const s = await ort.InferenceSession.create(model, {graphOptimizationLevel: 'disabled'});
  const r = await s.run({input: new ort.Tensor('float32', data, dims)}, names);
  const meta = {};
  names.forEach((n, i) => {
    fs.writeFileSync(`${outDir}/${i}.bin`, Buffer.from(r[n].data.buffer, r[n].data.byteOffset, r[n].data.byteLength));
    meta[n] = r[n].dims;
  });
  console.log(JSON.stringify(meta));
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


def ort_module_path():
    p = os.path.join(ROOT, "bench", "node_modules", "onnxruntime-node")
    return p if os.path.isdir(p) and shutil.which("node") else None


def ort_run(model_path, x, names):
    """Run model_path with `names` as extra graph outputs in ONNX Runtime
    (node + onnxruntime-node from bench/node_modules).  Returns {name: array}."""
    m = onnx.load(model_path)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory() as td:
        mp = os.path.join(td, "m.onnx")
        onnx.save(m, mp)
        ip = os.path.join(td, "in.bin")
        np.ascontiguousarray(x, dtype="<f4").tofile(ip)
        js = os.path.join(td, "run.js")
        with open(js, "w") as f:
            f.write(ORT_JS)
        r = subprocess.run(["node", js, ort_module_path(), mp, ip, json.dumps(list(x.shape)),
                            td] + list(names), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("onnxruntime failed: " + r.stderr.strip()[-2000:])
        dims = json.loads(r.stdout.strip().splitlines()[-1])
        return {n: np.fromfile(os.path.join(td, f"{i}.bin"), dtype="<f4").reshape(dims[n])
                for i, n in enumerate(names)}


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))


def count_ops(model):
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return dict(sorted(ops.items()))


# --------------------------------------------------------------------------

def float64_reference(model, x, fam, classes, logits, outdir, maps32, acts32, seed, spread):
    """--float64: the same model (a copy cast with .double(), so the same
    float32 weights exactly), the same input and the same target classes, run
    in float64.  Writes logits_f64.npy, act/grad_<which>_f64.npy and
    cam_<method>_<which>_f64.npy beside the float32 files; all are computed
    in float64 and stored, like every file here, as float32 (the rounding,
    6e-8 relative, is far below every tolerance).

    Returns the meta.json entry: for every array, how far PyTorch's float32
    result is from the float64 one ("f32"), and how far it can be ("spread"):
    the largest distance over the float32 run above and `spread` more float32
    runs on the input perturbed by a relative 2^-24 (x * (1 + 2^-24 n),
    n ~ N(0, 1), seeded), i.e. by its own float32 rounding.  The spread is
    what a float32 implementation can be expected to reach on that map."""
    m64 = copy.deepcopy(model).double().eval()
    x64 = x.double()
    with torch.no_grad():
        lg64 = m64(x64).numpy()
    np.save(os.path.join(outdir, "logits_f64.npy"), lg64.astype("<f4"))
    info = dict(
        note="model.double() (same weights), same input, same classes; "
             "max |float32 - float64| per array (maps: normalised, layer resolution)",
        logits=float(np.max(np.abs(logits.astype(np.float64) - lg64))),
        top1_f64=[int(c) for c in lg64.argmax(1)],
        layers={})
    gen = torch.Generator().manual_seed(seed + 64)
    xs = [x * (1 + 2.0 ** -24 * torch.randn(x.shape, generator=gen)) for _ in range(spread)]
    info["spread_runs"] = spread
    dist = lambda a, b: float(np.max(np.abs(a.astype(np.float64) - b)))
    for which in ("default", "middle"):
        _, _, A, G = act_and_grad(m64, x64, fam[which], classes)
        assert A.dtype == np.float64 and G.dtype == np.float64
        A32, G32 = acts32[which]
        np.save(os.path.join(outdir, f"act_{which}_f64.npy"), A.astype("<f4"))
        np.save(os.path.join(outdir, f"grad_{which}_f64.npy"), G.astype("<f4"))
        cams = {meth: scale_cam(cam_raw(meth, A, G)).astype(np.float64) for meth in CAM_METHODS}
        e = dict(act_max=float(np.max(np.abs(A))), grad_max=float(np.max(np.abs(G))),
                 act=dict(f32=dist(A32, A), spread=dist(A32, A)),
                 grad=dict(f32=dist(G32, G), spread=dist(G32, G)),
                 maps={meth: dict(f32=dist(maps32[which][meth], cams[meth]),
                                  spread=dist(maps32[which][meth], cams[meth])) for meth in CAM_METHODS})
        for xp in xs:
            _, _, Ap, Gp = act_and_grad(model, xp, fam[which], classes)
            e["act"]["spread"] = max(e["act"]["spread"], dist(Ap, A))
            e["grad"]["spread"] = max(e["grad"]["spread"], dist(Gp, G))
            for meth in CAM_METHODS:
                d = dist(scale_cam(cam_raw(meth, Ap, Gp)), cams[meth])
                e["maps"][meth]["spread"] = max(e["maps"][meth]["spread"], d)
        for meth in CAM_METHODS:
            np.save(os.path.join(outdir, f"cam_{meth}_{which}_f64.npy"), cams[meth].astype("<f4"))
        info["layers"][which] = e
    return info


def model_and_input(name, full=False):
    """Family `name`'s model (small, or the full-size torchvision one), with
    its seeded random weights, and its input; also the seed.  Deterministic,
    so other tools (tools/relu_flips.py) can rebuild exactly what
    make_one exported."""
    fam = FAMILIES[name]
    seed = SEED + sum(map(ord, name))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if full:
        arch, size = fam["full"]
        model = build_full(arch)
        batch = 1
    else:
        model = fam["build"]()
        size = fam["size"]
        batch = BATCH
    randomise(model, size, gen)
    x = torch.randn(batch, 3, size, size, generator=gen)
    return model, x, seed


def make_one(name, fam, outdir, full=False, use_ort=True, float64=False, spread=16):
    model, x, seed = model_and_input(name, full)

    os.makedirs(outdir, exist_ok=True)
    onnx_path = os.path.join(outdir, "model.onnx")
    export(model, x, onnx_path, fam["opset"], fam["export"], fam["fold"])
    om = onnx.load(onnx_path)
    onnx.checker.check_model(om)
    shapes = inferred_shapes(om)

    with torch.no_grad():
        logits = model(x).numpy().astype(np.float32)
    classes = torch.from_numpy(logits.argmax(1))

    np.save(os.path.join(outdir, "input.npy"), x.numpy().astype("<f4"))
    np.save(os.path.join(outdir, "logits.npy"), logits.astype("<f4"))

    layers = {}
    maps32, acts32 = {}, {}
    for which in ("default", "middle"):
        spec = fam[which]
        lg, _, A, G = act_and_grad(model, x, spec, classes)
        assert np.allclose(lg.numpy(), logits, rtol=1e-4, atol=1e-5)
        tname = find_tensor(om.graph, spec)
        ishape = shapes.get(tname) or None  # [] = rank unknown to onnx shape inference
        if ishape is not None:
            assert len(ishape) == 4 and list(ishape[1:]) == list(A.shape[1:]), \
                (name, which, tname, ishape, A.shape)
        np.save(os.path.join(outdir, f"act_{which}.npy"), A.astype("<f4"))
        np.save(os.path.join(outdir, f"grad_{which}.npy"), G.astype("<f4"))
        maps32[which] = {meth: scale_cam(cam_raw(meth, A, G)) for meth in CAM_METHODS}
        acts32[which] = (A, G)
        for meth in CAM_METHODS:
            np.save(os.path.join(outdir, f"cam_{meth}_{which}.npy"), maps32[which][meth])
        np.save(os.path.join(outdir, f"eigencam_{which}.npy"), scale_cam(eigen_raw(A)))
        layers[which] = dict(tensor=tname, torch_module=spec if isinstance(spec, str) else
                             "F.relu(features) in DenseNet.forward", shape=list(A.shape),
                             shape_inferred=ishape is not None)

    check = None
    if use_ort and ort_module_path():
        names = ["logits", layers["default"]["tensor"], layers["middle"]["tensor"]]
        got = ort_run(onnx_path, x.numpy(), names)
        errs = {"logits": rel_err(got["logits"], logits)}
        for which, n in (("default", names[1]), ("middle", names[2])):
            ref = np.load(os.path.join(outdir, f"act_{which}.npy"))
            assert got[n].shape == ref.shape, (name, which, n, got[n].shape, ref.shape)
            errs[which] = rel_err(got[n], ref)
        check = dict(engine="onnxruntime-node", max_rel_err=errs)
        bad = {k: v for k, v in errs.items() if v > 1e-3}
        assert not bad, f"{name}: ONNX Runtime disagrees with PyTorch: {bad}"

    meta = dict(
        family=name,
        opset=fam["opset"],
        input_shape=list(x.shape),
        num_classes=int(logits.shape[1]),
        default_layer=layers["default"]["tensor"],
        middle_layer=layers["middle"]["tensor"],
        classes=[int(c) for c in classes],
        torchvision_arch=fam["full"][0] if full else None,
        layers=layers,
        export=dict(training_mode=fam["export"].upper(), do_constant_folding=fam["fold"],
                    dynamic_axes={"input": {"0": "N"}, "logits": {"0": "N"}},
                    input_name="input", output_name="logits", torch=torch.__version__,
                    torchvision=torchvision.__version__),
        params=int(sum(p.numel() for p in model.parameters())),
        ops=count_ops(om),
        cam_methods=CAM_METHODS + ["eigencam"],
        cam_scaling="relu, then per image x-=min(x); x/=(1e-7+max(x)) (pytorch-grad-cam scale_cam_image); layer resolution",
        ort_check=check,
        seed=seed,
    )
    if float64:  # only with --float64, so the default meta.json is unchanged
        meta["float64"] = float64_reference(model, x, fam, classes, logits, outdir, maps32,
                                            acts32, seed, spread)
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="small golden set (e.g. tests/golden)")
    ap.add_argument("--full", metavar="DIR", help="full-size torchvision models, batch 1 (not committed)")
    ap.add_argument("--only", help="comma-separated family names")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime cross-check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--float64", action="store_true",
                    help="also write float64 PyTorch references (*_f64.npy, meta.json 'float64')")
    ap.add_argument("--spread", type=int, default=16, metavar="K",
                    help="with --float64: float32 reruns on 2^-24-perturbed inputs (default 16)")
    args = ap.parse_args()
    if not args.out and not args.full:
        ap.error("give --out DIR and/or --full DIR")
    torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else list(FAMILIES)
    for n in names:
        if n not in FAMILIES:
            ap.error(f"unknown family {n}; known: {', '.join(FAMILIES)}")
    if not args.no_ort and not ort_module_path():
        print("note: bench/node_modules/onnxruntime-node not found; skipping ORT cross-check",
              file=sys.stderr)
    for target, full in ((args.out, False), (args.full, True)):
        if not target:
            continue
        todo = names if (args.only or not full) else FULL_DEFAULT
        for n in todo:
            d = os.path.join(target, FAMILIES[n]["full"][0] if full else n)
            meta = make_one(n, FAMILIES[n], d, full=full, use_ort=not args.no_ort,
                            float64=args.float64, spread=args.spread)
            sz = os.path.getsize(os.path.join(d, "model.onnx"))
            chk = meta["ort_check"]["max_rel_err"] if meta["ort_check"] else "-"
            print(f"{n:18s} opset {meta['opset']:2d} in {meta['input_shape']} "
                  f"onnx {sz / 1024:7.1f} KiB params {meta['params']:8d} "
                  f"default {meta['default_layer']} {meta['layers']['default']['shape']} "
                  f"middle {meta['middle_layer']} {meta['layers']['middle']['shape']} ort {chk}",
                  flush=True)
            if args.float64:
                f = meta["float64"]
                for w in ("default", "middle"):
                    e = f["layers"][w]
                    m, v = max(e["maps"].items(), key=lambda kv: kv[1]["spread"])
                    print(f"{'':18s} float64 {w:7s}: |grad32 - grad64| {e['grad']['f32']:.2g} "
                          f"(spread {e['grad']['spread']:.2g}, max |grad| {e['grad_max']:.2g}); "
                          f"worst map {m}: |map32 - map64| {v['f32']:.2g} (spread {v['spread']:.2g})",
                          flush=True)


if __name__ == "__main__":
    main()
