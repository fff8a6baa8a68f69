from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boneage.cli import main  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from boneage.inference.api import load_predictor  # noqa: E402
from boneage.inference.explain import is_localised, overlay, saliency, to_film  # noqa: E402
from boneage.models.checkpoint import save_checkpoint  # noqa: E402
from boneage.models.fusion import FusionRegressor  # noqa: E402
from boneage.models.registry import build_model  # noqa: E402
from boneage.preprocess.steps import thumbnail_pipeline  # noqa: E402


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    card = {"arch": "resnet18", "model_kwargs": {}, "input_size": 64,
            "pipeline": thumbnail_pipeline(64).to_dict(),
            "target_norm": {"mean": 120.0, "std": 40.0}}
    return save_checkpoint(model, card, tmp_path / "m.safetensors")


def test_onnx_export_matches_torch(checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(checkpoint), "--out",
                 str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["arch"] == "resnet18" and card["onnx"]["opset"] == 17
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 64, 64), dtype=np.uint8)  # dynamic batch: 5 != 2
    male = np.array([1, 0, 1, 0, 1], bool)
    a = load_predictor(checkpoint).predict_arrays(images, male, batch_size=3)
    b = load_predictor(out, backend="onnx").predict_arrays(images, male, batch_size=3)
    assert np.abs(a - b).max() < 0.05
    assert not np.allclose(a, a[0])  # real predictions, not a constant


def test_onnx_errors(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(BoneAgeError, match="no such .onnx"):
        load_predictor(tmp_path / "none.onnx", backend="onnx")
    (tmp_path / "x.onnx").write_bytes(b"garbage")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(BoneAgeError, match="not a boneage model card"):  # read first
        load_predictor(tmp_path / "x.onnx", backend="onnx")
    (tmp_path / "x.json").write_text(json.dumps({
        "format": "boneage-model/1", "arch": "resnet18", "input_size": 100,
        "pipeline": {"steps": [{"name": "squash", "size": 100}]}}))
    with pytest.raises(BoneAgeError, match="not a loadable ONNX"):
        load_predictor(tmp_path / "x.onnx", backend="onnx")
    with pytest.raises(BoneAgeError, match="unknown backend"):
        load_predictor(tmp_path / "x.onnx", backend="tensorrt")


def _bright_is_old_model():
    """Identity features, average pooling, linear head: the output grows with brightness
    everywhere, so every method must light up exactly where the image is bright."""
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(conv.weight)
    model = FusionRegressor(conv, 1, head=(4,), head_dropouts=(0.0,)).eval()
    with torch.no_grad():
        for layer in model.head.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.abs_()
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "occlusion"])
def test_heatmap_points_at_what_drives_the_output(method):
    model = _bright_is_old_model()
    img = np.zeros((48, 48), np.float32)
    img[4:16, 6:20] = 1.0
    cam = saliency(model, img, male=True, method=method)
    assert cam.shape == (48, 48) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert cam[4:16, 6:20].mean() > 3 * cam[28:, 28:].mean()
    assert cam[4:16, 6:20].max() == pytest.approx(1.0) and is_localised(cam)
    pic = overlay((img * 255).astype(np.uint8), cam)
    assert pic.shape == (48, 48, 3) and pic.dtype == np.uint8
    assert not is_localised(np.zeros((48, 48))) and not is_localised(np.ones((48, 48)))


def test_heatmap_lands_on_the_film_where_the_input_came_from():
    """A map on a hand-cropped, squashed input goes back to the hand's place on the film."""
    from boneage.preprocess.steps import Squash

    film = np.zeros((400, 300), np.uint8)
    meta: dict = {"film_shape": film.shape}
    # as if the hand box were x 100-200, y 50-350: crop then squash to 64
    from boneage.preprocess.steps import _scaling, _shift, _track

    _track(meta, _shift(-100, -50))
    _track(meta, _scaling(64 / 100, 64 / 300))
    cam = np.zeros((64, 64), np.float32)
    cam[:32, :32] = 1.0  # the input's top-left quarter
    on_film = to_film(cam, meta, (400, 300))
    hot = np.argwhere(on_film > 0.5)
    assert hot[:, 0].min() >= 48 and hot[:, 0].max() <= 202  # film rows 50-200
    assert hot[:, 1].min() >= 98 and hot[:, 1].max() <= 152  # film columns 100-150
    half = to_film(cam, meta, (200, 150))  # a display copy at half size: same place, halved
    hot2 = np.argwhere(half > 0.5)
    assert abs(hot2[:, 0].mean() - hot[:, 0].mean() / 2) < 2
    assert Squash(64)(film[50:350, 100:200], {}).shape == (64, 64)


def test_heatmap_on_registry_models(checkpoint):
    pred = load_predictor(checkpoint)
    img = np.random.default_rng(1).random((64, 64), np.float32)
    for method in ("gradcam", "occlusion"):
        cam = saliency(pred.model, img, False, method)
        assert cam.shape == (64, 64) and np.isfinite(cam).all()
    # a network answering in months (the bundled model's 127 on average): Grad-CAM++ weighs
    # gradients by exp(output), so it must see the z-score, not months, or every map is empty
    pred.model.set_output_scale(150.0, 40.0)
    cam = saliency(pred.model, img, False, "gradcampp")
    assert np.isfinite(cam).all() and cam.max() > 0


def test_onnx_sharing_the_float16_weights(tmp_path):
    """The bundled model's layout: one float16 .safetensors read by both backends."""
    torch.manual_seed(0)
    card = {"arch": "resnet18", "model_kwargs": {"upsample": 1.5}, "input_size": 64,
            "pipeline": thumbnail_pipeline(64).to_dict(),
            "target_norm": {"mean": 120.0, "std": 40.0}}
    weights = save_checkpoint(build_model("resnet18", upsample=1.5).eval(), card,
                              tmp_path / "m.safetensors", dtype="float16")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(weights), "--out", str(out), "--share-weights"]) == 0
    assert out.stat().st_size < 0.02 * weights.stat().st_size  # the graph alone
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 64, 64), dtype=np.uint8)
    male = np.array([1, 0, 1, 0, 1], bool)
    t = load_predictor(weights).estimate(images, male)
    o = load_predictor(out, backend="onnx").estimate(images, male)
    assert np.abs(t.mean - o.mean).max() < 1e-3 and np.abs(t.spread - o.spread).max() < 1e-3
    assert t.features.shape == (5, 512) and np.abs(t.features - o.features).max() < 1e-3
    assert np.allclose(t.single, load_predictor(weights).predict_arrays(images, male), atol=1e-4)
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    assert main(["export", "--model", str(weights), "--out", str(elsewhere / "m.onnx"),
                 "--share-weights"]) == 2


def test_card_correction_applies_on_every_backend_path(checkpoint):
    card = json.loads(checkpoint.with_suffix(".json").read_text())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 64, 64), dtype=np.uint8)
    male = np.array([1, 0, 1, 0], bool)
    plain = load_predictor(checkpoint).predict_arrays(images, male)
    card["output_correction"] = {"male": [10.0, 2.0], "female": [-5.0, 0.5]}
    checkpoint.with_suffix(".json").write_text(json.dumps(card))
    fixed = load_predictor(checkpoint).predict_arrays(images, male)
    want = np.where(male, 10 + 2 * plain, -5 + 0.5 * plain)
    assert np.allclose(fixed, want, atol=1e-3)
