"""The model's contract: the card declares inputs and outputs, the graph answers in months on
its own, and the predictor refuses inputs that break the contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from boneage.errors import BoneAgeError
from boneage.models.checkpoint import BUNDLED
from boneage.models.contract import check_inputs, io_contract, outputs_months

CARD = json.loads((BUNDLED / "default.json").read_text())


def test_the_bundled_card_declares_inputs_and_outputs():
    io = CARD["io"]
    image, sex = io["inputs"]
    assert image["name"] == "image" and image["shape"][1:] == [1, CARD["input_size"],
                                                                CARD["input_size"]]
    assert image["range"] == [0.0, 1.0] and sex["encoding"] == {"male": 1.0, "female": 0.0}
    assert io["outputs"][0]["name"] == "bone_age" and io["outputs"][0]["units"] == "months"
    assert CARD["version"] and CARD["changelog"][0]["version"] == CARD["version"]
    assert outputs_months(CARD) and not outputs_months({"target_norm": {"mean": 1, "std": 2}})


def test_the_onnx_graph_alone_answers_in_months():
    """Anyone running default.onnx with onnxruntime, without boneage, gets months."""
    ort = pytest.importorskip("onnxruntime")
    from boneage.inference.onnx import OnnxPredictor

    rng = np.random.default_rng(0)
    size = CARD["input_size"]
    images = rng.integers(0, 256, (4, size, size), dtype=np.uint8)
    male = np.array([1, 0, 1, 0], np.float32)
    session = ort.InferenceSession(str(BUNDLED / "default.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names[0] == "bone_age"
    raw = session.run(None, {"image": images[:, None].astype(np.float32) / 255.0,
                             "sex": male})[0]
    pred = OnnxPredictor.load(BUNDLED / "default.onnx")
    pred.card = {**pred.card, "output_correction": None}
    months = pred.predict_arrays(images, male.astype(bool))
    np.testing.assert_allclose(raw, months, atol=1e-3)
    # months, not a z-score: the scale inside the network (each member's, for an ensemble) is
    # the training films' mean, about 10 years
    members = CARD["model_kwargs"]["members"] if CARD["arch"] == "ensemble" else [CARD]
    assert all(abs(m["target_norm"]["mean"] - 127) < 15 for m in members)


def test_the_torch_network_answers_in_months_too():
    torch = pytest.importorskip("torch")
    from boneage.inference.onnx import OnnxPredictor
    from boneage.models.checkpoint import load_checkpoint

    model, card = load_checkpoint(BUNDLED / "default.safetensors")
    size = card["input_size"]
    images = np.random.default_rng(1).integers(0, 256, (3, size, size), dtype=np.uint8)
    with torch.no_grad():
        y = model(torch.from_numpy(images[:, None].astype(np.float32) / 255.0),
                  torch.tensor([1.0, 0.0, 1.0])).numpy()
    pred = OnnxPredictor.load(BUNDLED / "default.onnx")
    pred.card = {**pred.card, "output_correction": None}
    np.testing.assert_allclose(y, pred.predict_arrays(images, np.array([1, 0, 1], bool)),
                               atol=1e-3)


def test_inputs_are_checked_against_the_card():
    card = {"input_size": 8, "io": io_contract(8)}
    ok = np.zeros((2, 8, 8), np.uint8)
    check_inputs(card, ok, np.array([True, False]))
    check_inputs(card, ok, np.array([1, 0]))
    with pytest.raises(BoneAgeError, match=r"uint8 \(N, 8, 8\)"):
        check_inputs(card, np.zeros((2, 9, 8), np.uint8), np.array([1, 0]))
    with pytest.raises(BoneAgeError, match="uint8"):
        check_inputs(card, ok.astype(np.float32), np.array([1, 0]))
    with pytest.raises(BoneAgeError, match="1 \\(male\\) or 0"):
        check_inputs(card, ok, np.array([2, 0]))
    with pytest.raises(BoneAgeError, match="one sex value per film"):
        check_inputs(card, ok, np.array([1]))


def test_the_markdown_model_card_is_the_json_card():
    """default.md is rendered from default.json: a card edited without it fails here."""
    from boneage.models.card import render_markdown

    md = (BUNDLED / "default.md").read_text()
    assert md.strip() == render_markdown(CARD).strip()
    for part in ("## Intended use", "## Limits", "Not a medical device", "| 14-20 y |",
                 "male = 1, female = 0", "output `bone_age`", "## Terms"):
        assert part in md, part


@pytest.mark.parametrize("key, value, named", [
    ("calibration.q", "abc", "calibration"),
    ("calibration.single.eps", None, "calibration"),
    ("output_correction.male", None, "output_correction"),
    ("output_correction.female", [1.0], "output_correction"),
    ("embedding.mean", [0.0, 1.0], "embedding"),  # shorter than 'scale'
    ("embedding.threshold", {}, "embedding"),
    ("pipeline.steps", [{"name": ["crop_hand"]}], "pipeline"),
    ("pipeline.steps", [{"name": "crop_hand", "margin": "wide"}], "pipeline"),
    ("pipeline.steps", [None], "pipeline"),
    ("io.outputs", 3, "io"),
    ("target_norm", {"mean": 1.0}, "target_norm"),
    ("input_size", 1.5, "input_size"),
])
def test_a_damaged_card_is_one_line_naming_its_key(tmp_path, key, value, named):
    """A hand-edited card broke at the first film (a KeyError in the interval, a numpy error in
    the "not a hand" check, a TypeError in OpenCV); it is refused when read."""
    from boneage.models.checkpoint import read_card

    card = json.loads(json.dumps(CARD))
    *parents, last = key.split(".")
    node = card
    for k in parents:
        node = node[k]
    node[last] = value
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(BoneAgeError, match=f"model card: '{named}'") as e:
        read_card(tmp_path / "m.safetensors")
    assert "\n" not in str(e.value)
    (tmp_path / "m.json").write_text(json.dumps(CARD))  # the bundled card itself reads
    assert read_card(tmp_path / "m.safetensors")["input_size"] == CARD["input_size"]


def test_a_card_without_a_pipeline_cannot_estimate(tmp_path):
    from boneage.inference.predictor import Predictor

    card = {k: v for k, v in CARD.items() if k != "pipeline"}
    with pytest.raises(BoneAgeError, match="no 'pipeline'"):
        Predictor(card, tmp_path / "m.safetensors")


def test_the_bundled_files_match_their_card_digests():
    from boneage.models.checkpoint import check_digest

    check_digest(BUNDLED / "default.safetensors", CARD["weights_sha256"])
    check_digest(BUNDLED / "default.onnx", CARD["onnx"]["sha256"])


def test_a_changed_byte_in_the_weights_or_the_graph_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    import shutil

    from boneage.inference.onnx import OnnxPredictor

    for f in ("default.json", "default.safetensors", "default.onnx"):
        shutil.copyfile(BUNDLED / f, tmp_path / f)
    OnnxPredictor.load(tmp_path / "default.onnx")  # as copied, it loads
    for name in ("default.safetensors", "default.onnx"):
        p = tmp_path / name
        data = p.read_bytes()
        damaged = bytearray(data)
        damaged[-100] ^= 1  # near the end: inside the last weights
        p.write_bytes(bytes(damaged))
        with pytest.raises(BoneAgeError, match="does not match the sha256 in its model card"):
            OnnxPredictor.load(tmp_path / "default.onnx")
        p.write_bytes(data)
    # without the digest, damaged weights load and compute: the check is what stops them
    card = json.loads((tmp_path / "default.json").read_text())
    del card["weights_sha256"]
    (tmp_path / "default.json").write_text(json.dumps(card))
    damaged = bytearray((tmp_path / "default.safetensors").read_bytes())
    damaged[-100] ^= 1
    (tmp_path / "default.safetensors").write_bytes(bytes(damaged))
    assert OnnxPredictor.load(tmp_path / "default.onnx").card["arch"] == CARD["arch"]
