"""What a clinic's install without PyTorch (`pip install '.[onnx,service]'`) must do with the
bundled model: predict, evaluate, serve (the page's film, a report, a refused bomb), and never
import torch on the way. CI runs the whole suite again in such an environment; here the checks
run in a child process, so they hold in either environment."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from boneage.data.synthetic import synthetic_film
from tests.conftest import ROOT

pytest.importorskip("onnxruntime")


def run_child(code: str, tmp_path) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object last."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def labelled_films(tmp_path) -> Path:
    """12 synthetic films with labels.csv: enough to evaluate and calibrate."""
    d = tmp_path / "films"
    d.mkdir()
    lines = ["id,boneage,male"]
    for i in range(12):
        film, _ = synthetic_film(height=400, width=320, seed=i)
        cv2.imwrite(str(d / f"s{i}.png"), film)
        lines.append(f"s{i},{40 + 12 * i},{i % 2}")
    (d / "labels.csv").write_text("\n".join(lines) + "\n")
    return d


def test_predict_and_evaluate_without_importing_torch(tmp_path):
    d = labelled_films(tmp_path)
    out = run_child(f"""
        import json, sys
        from boneage.cli import main
        rc1 = main(["predict", "{ROOT / 'examples/phantom-hand.png'}", "--sex", "F",
                    "--format", "json"])
        rc2 = main(["evaluate", "--model", "default", "--images", "{d}", "--labels",
                    "{d / 'labels.csv'}", "--tta", "--out", "{tmp_path / 'rep'}"])
        print(json.dumps({{"rc": [rc1, rc2], "torch": "torch" in sys.modules}}))
    """, tmp_path)
    assert out == {"rc": [0, 0], "torch": False}
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["n"] == 12 and "interval" in metrics
    assert (tmp_path / "rep" / "report.html").is_file()


def test_heatmaps_and_reports_without_torch(tmp_path):
    """The README's tour in a clinic's install: `predict --heatmap --report` draws Grad-CAM++
    on ONNX Runtime (the heatmap graph beside the bundled model), at each film's shape."""
    for i, (h, w) in enumerate(((400, 320), (300, 420))):
        film, _ = synthetic_film(height=h, width=w, seed=20 + i)
        cv2.imwrite(str(tmp_path / f"f{i}.png"), film)
    out = run_child(f"""
        import json, sys
        from boneage.cli import main
        rc = main(["predict", "{tmp_path / 'f0.png'}", "{tmp_path / 'f1.png'}", "--sex", "F",
                   "--heatmap", "{tmp_path / 'hm'}", "--report", "{tmp_path / 'pdf'}",
                   "--format", "json", "--out", "{tmp_path / 'r.jsonl'}"])
        print(json.dumps({{"rc": rc, "torch": "torch" in sys.modules}}))
    """, tmp_path)
    assert out == {"rc": 0, "torch": False}
    for i, (h, w) in enumerate(((400, 320), (300, 420))):
        pic = cv2.imread(str(tmp_path / "hm" / f"f{i}.heatmap.png"))
        assert pic.shape[:2] == (h, w)
        film = cv2.cvtColor(cv2.imread(str(tmp_path / f"f{i}.png")), cv2.COLOR_BGR2GRAY)
        colour = pic.astype(int).std(axis=2)  # where the map is warm the overlay is coloured
        assert colour.max() > 30 and film.shape == (h, w)
        assert (tmp_path / "pdf" / f"f{i}.report.pdf").stat().st_size > 10_000


def test_service_on_onnx_runtime_without_torch(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    film, _ = synthetic_film(height=400, width=320, seed=2)
    cv2.imwrite(str(tmp_path / "f.png"), film)
    out = run_child(f"""
        import json, sys
        from fastapi.testclient import TestClient
        from boneage.inference.api import load_model
        from boneage.service.app import Settings, create_app
        c = TestClient(create_app(load_model("default", backend="onnx"), Settings()))
        data = open("{tmp_path / 'f.png'}", "rb").read()
        p = c.post("/v1/predict", files={{"file": ("f.png", data, "image/png")}},
                   data={{"sex": "F", "heatmap": "true"}}).json()
        r = c.post("/v1/report", files={{"file": ("f.png", data, "image/png")}},
                   data={{"sex": "F", "identifier": "T-1"}})
        head = (b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0\\0\\0\\rIHDR"
                + (60000).to_bytes(4, "big") * 2 + b"\\x08" + b"\\0" * 12)
        bomb = c.post("/v1/predict", files={{"file": ("b.png", head, "image/png")}},
                      data={{"sex": "F"}})
        print(json.dumps({{"film": p["film"][:23], "heatmap": (p["heatmap"] or "")[:23],
                          "warned": any("heatmap" in w for w in p["warnings"]),
                          "report": [r.status_code, r.headers["content-disposition"]],
                          "bomb": bomb.status_code, "torch": "torch" in sys.modules}}))
    """, tmp_path)
    assert out["film"] == "data:image/jpeg;base64,"
    assert out["heatmap"] == "data:image/jpeg;base64," and not out["warned"]
    assert out["report"] == [200, 'attachment; filename="bone-age-T-1.pdf"']
    assert out["bomb"] == 413 and out["torch"] is False


def test_a_recalibrated_copy_of_the_bundled_model_runs_where_the_bundled_one_does(tmp_path):
    # a clinic recalibrates the bundled model on its own films: the package's card stays as
    # shipped, and the copy (weights, graph, card) runs on ONNX Runtime without torch too
    import hashlib
    import importlib.util

    from boneage.models.checkpoint import BUNDLED

    d = labelled_films(tmp_path)
    shipped = hashlib.sha256((BUNDLED / "default.json").read_bytes()).hexdigest()
    out = run_child(f"""
        import json, sys
        from boneage.cli import main
        from boneage.inference.api import load_model
        rc = main(["calibrate", "--model", "default", "--images", "{d}", "--labels",
                   "{d / 'labels.csv'}", "--out", "{tmp_path / 'ours'}"])
        m = load_model("{tmp_path / 'ours'}")
        r = m.predict("{d / 's3.png'}", sex="M")
        print(json.dumps({{"rc": rc, "backend": type(m.predictor).__name__,
                          "interval": r.interval_low_months < r.interval_high_months,
                          "n": m.predictor.card["calibration"]["n"]}}))
    """, tmp_path)
    torch = importlib.util.find_spec("torch") is not None
    assert out == {"rc": 0, "backend": "TorchPredictor" if torch else "OnnxPredictor",
                   "interval": True, "n": 12}
    assert hashlib.sha256((BUNDLED / "default.json").read_bytes()).hexdigest() == shipped
