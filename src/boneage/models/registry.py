"""Architectures built by name (as timm does): `build_model("densenet121")`.

MONAI supplies the backbones; this package adds only what MONAI lacks (CBAM, sex fusion, heads).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from boneage.errors import BoneAgeError
from boneage.models.fusion import FusionRegressor

MODELS: dict[str, Callable[..., nn.Module]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        DESCRIPTIONS[name] = description
        return fn
    return deco


def build_model(name: str, **kwargs: Any) -> nn.Module:
    if name not in MODELS:
        raise BoneAgeError(f"unknown architecture {name!r} (known: {', '.join(sorted(MODELS))})")
    try:
        return MODELS[name](**kwargs)
    except (TypeError, ValueError) as e:
        raise BoneAgeError(f"architecture {name!r}: bad option ({e})") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _monai_nets():
    """MONAI's network classes, imported without matplotlib. `import monai` imports every MONAI
    submodule, and matplotlib.pyplot (used only by MONAI's notebook helpers) adds about 0.5 s
    to every cold start of `boneage predict`. A None entry in sys.modules makes that one
    import fail, which MONAI's optional imports tolerate; it is removed straight after."""
    if "monai.networks.nets" not in sys.modules and "matplotlib" not in sys.modules:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]
        try:
            import monai.networks.nets
        finally:
            if sys.modules.get("matplotlib", 0) is None:
                del sys.modules["matplotlib"]
    import monai.networks.nets

    return monai.networks.nets


def _densenet_features(act: str = "gelu", cbam: bool = False) -> tuple[nn.Module, int]:
    DenseNet = _monai_nets().DenseNet  # noqa: N806 (a class)

    blocks, growth, channels = (6, 12, 24, 16), 32, 64
    net = DenseNet(spatial_dims=2, in_channels=1, out_channels=1, init_features=channels,
                   growth_rate=growth, block_config=blocks, bn_size=4, act=act)
    features = net.features
    if cbam:
        from collections import OrderedDict

        from boneage.models.cbam import CBAM

        # attention after each dense block, on the block's concatenated output (the seed's
        # first "future enhancement"); transitions halve the channels in between
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        for name, module in features.named_children():
            parts[name] = module
            if name.startswith("denseblock"):
                i = int(name.removeprefix("denseblock"))
                channels += blocks[i - 1] * growth
                parts[f"cbam{i}"] = CBAM(channels)
                if i < len(blocks):
                    channels //= 2
        features = nn.Sequential(parts)
    # MONAI's features end with the final norm; its classifier applies act, pool, linear.
    return nn.Sequential(features, nn.GELU() if act == "gelu" else nn.ReLU()), 1024


def _resnet_features(layers: tuple[int, ...], cbam: bool) -> tuple[nn.Module, int]:
    from boneage.models.cbam import CBAM

    ResNet = _monai_nets().ResNet  # noqa: N806 (a class)

    net = ResNet("basic", list(layers), [64, 128, 256, 512], spatial_dims=2,
                 n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, num_classes=1)
    if cbam:
        # attention on each residual branch, after its last norm and before the addition
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                block.bn2 = nn.Sequential(block.bn2, CBAM(block.bn2.num_features))
    body = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool,
                         net.layer1, net.layer2, net.layer3, net.layer4)
    return body, 512


@register("densenet121", "DenseNet121 (6/12/24/16, growth 32), GELU; sex MLP; head 32-16-1")
def densenet121(dropout: float = 0.2, upsample: float = 1.0) -> nn.Module:
    body, feats = _densenet_features("gelu")
    return FusionRegressor(body, feats, head=(32, 16), head_dropouts=(0.0, dropout),
                           upsample=upsample)


@register("densenet121_cbam", "DenseNet121 with CBAM after each dense block; sex MLP; head "
          "32-16-1")
def densenet121_cbam(dropout: float = 0.2, upsample: float = 1.0) -> nn.Module:
    body, feats = _densenet_features("gelu", cbam=True)
    return FusionRegressor(body, feats, head=(32, 16), head_dropouts=(0.0, dropout),
                           upsample=upsample)


@register("resnet34_cbam", "ResNet34 with CBAM in every block; sex MLP; head 1024-512-1")
def resnet34_cbam(dropout: float = 0.4, upsample: float = 1.0) -> nn.Module:
    body, feats = _resnet_features((3, 4, 6, 3), cbam=True)
    return FusionRegressor(body, feats, head=(1024, 512), head_dropouts=(dropout, dropout),
                           upsample=upsample)


@register("resnet18", "ResNet18 (fast on CPUs); sex MLP; head 256-1")
def resnet18(dropout: float = 0.2, upsample: float = 1.0) -> nn.Module:
    body, feats = _resnet_features((2, 2, 2, 2), cbam=False)
    return FusionRegressor(body, feats, head=(256,), head_dropouts=(dropout,), upsample=upsample)


@register("resnet18_cbam", "ResNet18 with CBAM in every block; sex MLP; head 256-1")
def resnet18_cbam(dropout: float = 0.2, upsample: float = 1.0) -> nn.Module:
    body, feats = _resnet_features((2, 2, 2, 2), cbam=True)
    return FusionRegressor(body, feats, head=(256,), head_dropouts=(dropout,), upsample=upsample)


def _lite(arch: str, dropout: float, upsample: float, freeze: int) -> nn.Module:
    from boneage.models.efficientnet_lite import lite_features

    body, feats = lite_features(arch, freeze)
    return FusionRegressor(body, feats, head=(256,), head_dropouts=(dropout,), upsample=upsample)


@register("efficientnet_lite0", "EfficientNet-Lite0 (4.7 M), ImageNet weights with `init: "
          "imagenet` (extra .[pretrained]); sex MLP; head 256-1")
def efficientnet_lite0(dropout: float = 0.2, upsample: float = 1.0, freeze: int = 0) -> nn.Module:
    return _lite("efficientnet_lite0", dropout, upsample, freeze)


@register("efficientnet_lite1", "EfficientNet-Lite1, ImageNet weights with `init: imagenet`; "
          "sex MLP; head 256-1")
def efficientnet_lite1(dropout: float = 0.2, upsample: float = 1.0, freeze: int = 0) -> nn.Module:
    return _lite("efficientnet_lite1", dropout, upsample, freeze)


@register("efficientnet_lite2", "EfficientNet-Lite2, ImageNet weights with `init: imagenet`; "
          "sex MLP; head 256-1")
def efficientnet_lite2(dropout: float = 0.2, upsample: float = 1.0, freeze: int = 0) -> nn.Module:
    return _lite("efficientnet_lite2", dropout, upsample, freeze)


PRETRAINED = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def load_pretrained(model: nn.Module, arch: str) -> dict[str, Any]:
    """ImageNet weights into a built network (`init: imagenet`); what the card records."""
    if arch not in PRETRAINED:
        raise BoneAgeError(f"init: imagenet: {arch} has no ImageNet weights here (those that "
                           f"have: {', '.join(sorted(PRETRAINED))})")
    from boneage.models.efficientnet_lite import load_imagenet

    return load_imagenet(model, arch)


@register("ensemble", "the mean of trained networks as one model (built from runs with "
          "`boneage ensemble`, not trained)")
def ensemble(members: list[dict[str, Any]]) -> nn.Module:
    from boneage.models.ensemble import EnsembleRegressor

    return EnsembleRegressor(members)
