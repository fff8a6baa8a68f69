from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from boneage.errors import BoneAgeError  # noqa: E402
from boneage.models.cbam import CBAM  # noqa: E402
from boneage.models.checkpoint import (  # noqa: E402
    load_checkpoint,
    resolve_model_path,
    save_checkpoint,
)
from boneage.models.registry import MODELS, build_model, count_parameters  # noqa: E402

EXPECTED = {"densenet121": 7.1e6, "densenet121_cbam": 7.3e6, "resnet34_cbam": 22.6e6,
            "resnet18": 11.3e6, "resnet18_cbam": 11.4e6}
# EfficientNet-Lite: the published sizes (4.7 / 5.4 / 6.1 M) less the 1000-class head
# (1280 x 1000 + 1000) plus the sex MLP and the 256-1 head (about 0.33 M)
EXPECTED |= {f"efficientnet_lite{k}": total - 1.281e6 + 0.33e6
             for k, total in ((0, 4.7e6), (1, 5.4e6), (2, 6.1e6))}


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"ensemble"}))  # test_ensemble.py
def test_every_architecture_builds_and_runs(name):
    model = build_model(name).eval()
    n = count_parameters(model)
    assert abs(n - EXPECTED[name]) / EXPECTED[name] < 0.05, n
    x = torch.rand(3, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x, torch.tensor([1.0, 0.0, 1.0]))
    assert y.shape == (3,) and torch.isfinite(y).all()
    # sex changes the answer: the fusion is wired in
    with torch.no_grad():
        y2 = model(x, torch.tensor([0.0, 1.0, 0.0]))
    assert not torch.allclose(y, y2)


def test_cbam_in_every_resnet34_block():
    model = build_model("resnet34_cbam")
    assert sum(isinstance(m, CBAM) for m in model.modules()) == 3 + 4 + 6 + 3


def test_cbam_after_each_densenet_block():
    model = build_model("densenet121_cbam")
    cbams = [m for m in model.modules() if isinstance(m, CBAM)]
    # one per dense block, each sized to that block's concatenated output
    assert [c[0].mlp[0].in_channels for c in cbams] == [256, 512, 1024, 1024]


def test_unknown_architecture():
    with pytest.raises(BoneAgeError, match="unknown architecture"):
        build_model("vgg99")


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    card = {"arch": "resnet18", "model_kwargs": {}, "pipeline": {"steps": []}}
    path = save_checkpoint(model, card, tmp_path / "m.safetensors")
    loaded, card2 = load_checkpoint(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x, torch.ones(2)), loaded(x, torch.ones(2)))
    assert card2["arch"] == "resnet18" and card2["format"] == "boneage-model/1"
    assert resolve_model_path(tmp_path / "m.json") == path
    assert len(card2["weights_sha256"]) == 64  # written with the weights, checked on loading
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(BoneAgeError, match="does not match the sha256"):
        load_checkpoint(path)


def test_checkpoint_errors(tmp_path):
    model = build_model("resnet18")
    path = save_checkpoint(model, {"arch": "resnet18_cbam"}, tmp_path / "m.safetensors")
    with pytest.raises(BoneAgeError, match="do not match"):
        load_checkpoint(path)
    (tmp_path / "bad.safetensors").write_bytes(b"not really")
    (tmp_path / "bad.json").write_text('{"format": "boneage-model/1", "arch": "resnet18"}')
    with pytest.raises(BoneAgeError, match="safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")
    (tmp_path / "nocard.safetensors").write_bytes(b"x")
    with pytest.raises(BoneAgeError, match="no model card"):
        load_checkpoint(tmp_path / "nocard.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BoneAgeError, match="no best.safetensors"):
        resolve_model_path(tmp_path / "empty")
    with pytest.raises(BoneAgeError, match="no such model"):
        resolve_model_path(tmp_path / "missing.safetensors")


def test_upsample_enlarges_inside_the_network_and_is_checked():
    torch.manual_seed(0)
    model = build_model("resnet18", upsample=2.0).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert model.features(x).shape[-1] == 4  # 128 px through stride 32
        out, emb = model.forward_with_embedding(x, torch.tensor([1.0, 0.0]))
        assert torch.allclose(out, model(x, torch.tensor([1.0, 0.0])))
    assert emb.shape == (2, 512)
    assert build_model("resnet18").features(x).shape[-1] == 2
    with pytest.raises(BoneAgeError, match="upsample"):
        build_model("densenet121", upsample=8)


def test_half_precision_checkpoint_is_half_the_size_and_close(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    card = {"arch": "resnet18", "model_kwargs": {}}
    full = save_checkpoint(model, card, tmp_path / "full.safetensors")
    half = save_checkpoint(model, card, tmp_path / "half.safetensors", dtype="float16")
    assert half.stat().st_size < 0.52 * full.stat().st_size
    m16, c16 = load_checkpoint(half)
    assert c16["weights_dtype"] == "float16"
    assert next(m16.parameters()).dtype == torch.float32  # computes in float32
    x, s = torch.rand(2, 1, 64, 64), torch.tensor([1.0, 0.0])
    with torch.no_grad():
        assert torch.allclose(m16(x, s), model(x, s), atol=2e-2)
