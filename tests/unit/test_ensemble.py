"""Ensembles: trained runs averaged into one model that every command treats as any other."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boneage.cli import main  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from boneage.inference.api import load_predictor  # noqa: E402
from boneage.inference.explain import saliency  # noqa: E402
from boneage.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from boneage.models.registry import build_model  # noqa: E402
from boneage.preprocess.steps import thumbnail_pipeline  # noqa: E402

SPLIT = {"split_sha256": "abc"}


def _run(folder, seed, upsample=1.0, mean=120.0, size=64, split=SPLIT):
    """A run folder holding an untrained ResNet18 (its own seed, upsample and output scale)."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    card = {"arch": "resnet18", "model_kwargs": {"upsample": upsample}, "input_size": size,
            "pipeline": thumbnail_pipeline(size).to_dict(), "data": split,
            "target_norm": {"mean": mean, "std": 40.0}, "metrics": {"val": {"mae": 9.0}}}
    save_checkpoint(build_model("resnet18", upsample=upsample).eval(), card,
                    folder / "best.safetensors")
    (folder / "split.csv").write_text("id,split\n1,train\n")
    return folder


@pytest.fixture
def members(tmp_path):
    return [_run(tmp_path / "a", 0), _run(tmp_path / "b", 1, upsample=1.5, mean=100.0)]


def test_ensemble_answers_the_mean_of_its_members(members, tmp_path):
    out = tmp_path / "ens"
    assert main(["ensemble", *map(str, members), "--out", str(out)]) == 0
    card = json.loads((out / "best.json").read_text())
    assert card["arch"] == "ensemble" and len(card["model_kwargs"]["members"]) == 2
    assert (out / "split.csv").is_file()  # evaluate/calibrate find the members' split
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    male = np.array([1, 0, 1, 0], bool)
    each = [load_predictor(m).infer(images, male) for m in members]
    est, feats = load_predictor(out).infer(images, male)
    assert np.allclose(est, (each[0][0] + each[1][0]) / 2, atol=1e-4)
    assert not np.allclose(each[0][0], each[1][0], atol=1)  # the members differ
    assert np.allclose(feats, np.concatenate([each[0][1], each[1][1]], axis=1), atol=1e-5)
    assert card["io"]["outputs"][1]["shape"] == ["batch", 1024]
    # heatmaps: the members' maps averaged, on the film's input grid
    cam = saliency(load_predictor(out).model, images[0] / 255.0, True, "gradcampp")
    assert cam.shape == (64, 64) and np.isfinite(cam).all() and cam.max() == pytest.approx(1)


def test_int8_weights_a_quarter_of_float32_and_one_onnx_graph(members, tmp_path):
    pytest.importorskip("onnxruntime")
    full, small = tmp_path / "f32", tmp_path / "i8"
    assert main(["ensemble", *map(str, members), "--out", str(full)]) == 0
    assert main(["ensemble", *map(str, members), "--out", str(small), "--dtype", "int8"]) == 0
    w32, w8 = full / "best.safetensors", small / "best.safetensors"
    assert w8.stat().st_size < 0.27 * w32.stat().st_size
    m32, _ = load_checkpoint(w32)
    m8, card = load_checkpoint(w8)
    assert card["weights_dtype"] == "int8"
    p32, p8 = dict(m32.named_parameters()), dict(m8.named_parameters())
    conv = "members.0.backbone.0.weight"
    step = p32[conv].abs().amax(dim=(1, 2, 3)) / 127  # per output channel
    assert (p8[conv] - p32[conv]).abs().amax(dim=(1, 2, 3)).le(step / 2 + 1e-7).all()
    assert torch.equal(p8["members.1.head.1.bias"], p32["members.1.head.1.bias"].half().float())
    # one ONNX graph reading the int8 file: the same numbers as torch
    onnx = small / "best.onnx"
    assert main(["export", "--model", str(small), "--out", str(onnx), "--share-weights"]) == 0
    assert onnx.stat().st_size < 0.03 * w8.stat().st_size
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    male = np.array([1, 0, 1], bool)
    t = load_predictor(w8).infer(images, male)
    o = load_predictor(onnx, backend="onnx").infer(images, male)
    assert np.abs(t[0] - o[0]).max() < 1e-3 and np.abs(t[1] - o[1]).max() < 1e-3


def test_ensemble_refusals(members, tmp_path, capsys):
    other_size = _run(tmp_path / "c", 2, size=48)
    other_split = _run(tmp_path / "d", 3, split={"split_sha256": "xyz"})
    cases = [([members[0]], "at least two"),
             ([members[0], other_size], "preprocessing differs"),
             ([members[0], other_split], "another split"),
             ([members[0], tmp_path / "missing"], "not a model")]
    for runs, message in cases:
        out = tmp_path / "refused"
        assert main(["ensemble", *map(str, runs), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not (out / "best.safetensors").exists()
    done = tmp_path / "done"
    assert main(["ensemble", *map(str, members), "--out", str(done)]) == 0
    before = (done / "best.safetensors").read_bytes()
    assert main(["ensemble", *map(str, members), "--out", str(done)]) == 2  # never overwritten
    assert (done / "best.safetensors").read_bytes() == before
    assert main(["ensemble", str(done), str(members[0]), "--out", str(tmp_path / "n")]) == 2
    assert "already an ensemble" in capsys.readouterr().err
    with pytest.raises(BoneAgeError, match="not trained"):
        from boneage.training.config import TrainConfig, validate

        validate(TrainConfig(arch="ensemble"))
    with pytest.raises(BoneAgeError, match="bad option"):
        build_model("ensemble", members=[{"arch": "resnet18"}])  # one member is no ensemble
    with pytest.raises(BoneAgeError, match="target_norm"):  # a tampered card: one line
        build_model("ensemble", members=[{"arch": "resnet18", "target_norm": {"mean": 1}}] * 2)


def test_an_ensemble_calibrates_evaluates_and_predicts_as_any_model(members, tmp_path, capsys):
    from tests.helpers import make_calibration_set

    out, films = tmp_path / "ens", tmp_path / "films"
    assert main(["ensemble", *map(str, members), "--out", str(out), "--dtype", "int8"]) == 0
    labels = make_calibration_set(films)
    assert main(["calibrate", "--model", str(out), "--images", str(films), "--labels",
                 str(labels)]) == 0
    card = json.loads((out / "best.json").read_text())
    assert card["calibration"]["n"] == 12 and len(card["embedding"]["mean"]) == 1024
    r = load_predictor(out)
    assert r.card["weights_dtype"] == "int8"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--images", str(films), "--labels",
                 str(labels), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["arch"] == "ensemble" and metrics["n"] == 12
    # compare: refused in one line until the ensemble is measured, then beside its members
    assert main(["compare", str(out), str(members[0]), "--out", str(tmp_path / "c")]) == 2
    assert "not measured yet" in capsys.readouterr().err
    assert not (tmp_path / "c" / "compare.csv").exists()
    assert main(["evaluate", "--model", str(out), "--images", str(films), "--labels",
                 str(labels), "--out", str(out / "eval")]) == 0
    assert main(["compare", str(out), str(members[0]), "--out", str(tmp_path / "c"),
                 "--allow-mixed"]) == 0
    assert "ensemble" in (tmp_path / "c" / "compare.md").read_text()
    capsys.readouterr()
    assert main(["predict", str(films / "c3.png"), "--sex", "M", "--model", str(out),
                 "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["interval_low_months"] < row["bone_age_months"] < row["interval_high_months"]


def test_interpolate_weights_between_a_run_and_its_fine_tune(tmp_path, capsys):
    start, end = _run(tmp_path / "s", 0), _run(tmp_path / "e", 1)
    start_card = json.loads((start / "best.json").read_text())
    # a released fine-tune: its version and figures describe it, not the network in between
    end_card = json.loads((end / "best.json").read_text())
    (end / "best.json").write_text(json.dumps(end_card | {"version": "9", "fullres_metrics":
                                                          {"mae": 1.0, "n": 1}}))
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    male = np.array([1, 0, 1], bool)
    ends = {}
    for alpha in (0.0, 0.25, 1.0):
        out = tmp_path / f"i{alpha}"
        assert main(["interpolate", str(start), str(end), "--alpha", str(alpha),
                     "--out", str(out)]) == 0
        ends[alpha] = out
        card = json.loads((out / "best.json").read_text())
        assert card["training"]["interpolated"]["alpha"] == alpha and card["metrics"] == {}
        assert not {"version", "fullres_metrics"} & set(card)
        assert card["pipeline"] == start_card["pipeline"]
        assert (out / "split.csv").is_file()
    pa, pe = (load_predictor(r).infer(images, male)[0] for r in (start, end))
    assert not np.allclose(pa, pe, atol=1)
    assert np.allclose(load_predictor(ends[0.0]).infer(images, male)[0], pa, atol=1e-4)
    assert np.allclose(load_predictor(ends[1.0]).infer(images, male)[0], pe, atol=1e-4)
    # every weight (and the batch-norm statistics) a quarter of the way from start to end
    wa, we, wi = (load_checkpoint(r / "best.safetensors")[0].state_dict()
                  for r in (start, end, ends[0.25]))
    for k in ("backbone.0.weight", "head.1.bias", "backbone.1.running_var"):
        assert torch.allclose(wi[k], 0.75 * wa[k] + 0.25 * we[k], atol=1e-6), k


def test_interpolate_refusals(members, tmp_path, capsys):
    start = members[0]
    other_scale = _run(tmp_path / "m", 4, mean=90.0)
    other_split = _run(tmp_path / "d", 3, split={"split_sha256": "xyz"})
    ens = tmp_path / "ens"
    assert main(["ensemble", *map(str, members), "--out", str(ens)]) == 0
    cases = [(start, members[1], "0.5", "network options"),   # another upsample
             (start, other_scale, "0.5", "output scale"),
             (start, other_split, "0.5", "another split"),
             (start, start, "1.5", "between 0"), (start, start, "nan", "between 0"),
             (ens, ens, "0.5", "an ensemble"),
             (start, tmp_path / "missing", "0.5", "not a model")]
    capsys.readouterr()
    for a, b, alpha, message in cases:
        out = tmp_path / "refused"
        assert main(["interpolate", str(a), str(b), "--alpha", alpha, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (out / "best.safetensors").exists()
    done = tmp_path / "done"
    assert main(["interpolate", str(start), str(start), "--alpha", "0.5", "--out",
                 str(done)]) == 0
    before = (done / "best.safetensors").read_bytes()
    assert main(["interpolate", str(start), str(start), "--alpha", "0.5", "--out",
                 str(done)]) == 2  # never overwritten
    assert (done / "best.safetensors").read_bytes() == before
