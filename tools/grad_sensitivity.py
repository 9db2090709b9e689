#!/usr/bin/python3
"""How sensitive is PyTorch's own Grad-CAM gradient at a middle layer?

Runs torchvision ResNet-50 (random weights, randomised BN statistics) on one
input, takes d logit[top] / d layer2-output, then perturbs the input by a
relative 1e-7 and 1e-6 and reports how far the activations and the gradient
move.  A perturbation that moves the activations by ~3e-5 (about what float32
summation order does) moves the gradient by ~1e-4: ReLU units near zero
switch on or off.  This is why camserve's middle-layer gradients of the
full-size models differ from PyTorch's by more than 1e-4 relative although
logits, activations and default-layer maps agree (tools/README.md).

The float64 references of `make_golden.py --float64` settle it per map
(docs/cam.md, "Float64 reference"), and tools/relu_flips.py shows the flipped
ReLU units themselves.

    /usr/bin/python3 tools/grad_sensitivity.py
"""
import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet50().eval()
# randomise BN stats a little like the golden script does
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
x = torch.randn(1, 3, 224, 224)
def grad_at(inp):
    acts = {}
    def hook(mod, i, o):
        o.retain_grad(); acts['a'] = o
    h = m.layer2.register_forward_hook(hook)
    out = m(inp); h.remove()
    c = out.argmax(1).item()
    out[0, c].backward()
    return acts['a'].detach(), acts['a'].grad.detach(), c
a0, g0, c0 = grad_at(x.clone())
for eps in [1e-7, 1e-6]:
    a1, g1, c1 = grad_at(x * (1 + eps * torch.randn_like(x)))
    print(f"input perturbed by {eps:g} rel: act max diff {float((a1-a0).abs().max()):.3g} (max {float(a0.abs().max()):.3g}), "
          f"grad max diff {float((g1-g0).abs().max()):.3g} (max |grad| {float(g0.abs().max()):.3g}), class {c0}->{c1}")
