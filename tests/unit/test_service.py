"""The HTTP API, every endpoint and every error status, with FastAPI's test client."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402

from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.inference.api import load_model  # noqa: E402
from boneage.service.app import Settings, create_app  # noqa: E402
from tests.unit.test_dicom import write_dicom  # noqa: E402
from tests.unit.test_predict import model_path  # noqa: E402,F401


def decode_data_url(url: str) -> np.ndarray:
    import base64

    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)


def png(seed: int = 0) -> bytes:
    film, _ = synthetic_film(height=400, width=320, seed=seed)
    return cv2.imencode(".png", film)[1].tobytes()


@pytest.fixture
def client(model_path):  # noqa: F811
    return TestClient(create_app(load_model(str(model_path)), Settings(max_upload_bytes=2**20)))


def test_health_models_and_docs(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "m" and h["version"]
    assert h["api_key_required"] is False and h["heatmaps"] is True
    m = client.get("/v1/models").json()["models"][0]
    assert m["arch"] == "resnet18" and m["calibrated"] is False
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_predict_same_keys_as_cli_json(client):
    r = client.post("/v1/predict", files={"file": ("f.png", png(), "image/png")},
                    data={"sex": "F", "chronological_age_months": "100", "heatmap": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    from boneage.inference.api import RESULT_COLUMNS

    assert list(body)[: len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
    assert body["sex"] == "F" and body["chronological_age_months"] == 100
    assert body["category"] in ("delayed", "normal", "advanced")
    film, heat = decode_data_url(body["film"]), decode_data_url(body["heatmap"])
    assert film.shape[:2] == heat.shape[:2] == (400, 320)  # the film's own shape


def test_dicom_upload_monochrome1(client, tmp_path):
    film, _ = synthetic_film(height=300, width=240, seed=2)
    p = write_dicom(tmp_path / "a.dcm", (255 - film).astype(np.uint16) * 16, "MONOCHROME1",
                    sex="M", age="007Y")
    r = client.post("/v1/predict", files={"file": ("a.dcm", p.read_bytes(),
                                                   "application/dicom")})
    assert r.status_code == 200, r.text
    assert r.json()["sex"] == "M" and r.json()["chronological_age_months"] == 84


@pytest.mark.parametrize("files,data,status,words", [
    (None, {"sex": "F"}, 400, "file"),
    ({"file": ("f.png", png(), "image/png")}, {}, 400, "sex: choose M or F"),
    ({"file": ("f.png", png(), "image/png")}, {"sex": "Q"}, 400, "unknown sex"),
    ({"file": ("f.png", png(), "image/png")}, {"sex": "F", "chronological_age_months": "900"},
     400, "between 0 and 240"),
    ({"file": ("f.png", png(), "image/png")}, {"sex": "F", "chronological_age_months": "old"},
     400, "chronological_age_months"),
    ({"file": ("f.txt", b"plain text", "text/plain")}, {"sex": "F"}, 415, "not an image"),
    ({"file": ("f.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png")}, {"sex": "F"}, 422,
     "file"),
    ({"file": ("f.png", b"", "image/png")}, {"sex": "F"}, 400, "empty"),
])
def test_errors_are_json_with_the_right_status(client, files, data, status, words):
    r = client.post("/v1/predict", files=files, data=data)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_oversized_upload_413(client):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (2**20 + 10)
    r = client.post("/v1/predict", files={"file": ("big.png", big, "image/png")},
                    data={"sex": "F"})
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_pixel_bomb_413(client):
    from tests.unit.test_images import _png_header

    r = client.post("/v1/predict", files={"file": ("b.png", _png_header(50_000, 50_000),
                                                   "image/png")}, data={"sex": "F"})
    assert r.status_code == 413


def test_api_key(model_path):  # noqa: F811
    c = TestClient(create_app(load_model(str(model_path)), Settings(api_key="s3cret")))
    files = {"file": ("f.png", png(), "image/png")}
    assert c.post("/v1/predict", files=files, data={"sex": "F"}).status_code == 401
    assert c.post("/v1/predict", files=files, data={"sex": "F"},
                  headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.post("/v1/predict", files=files, data={"sex": "F"},
                  headers={"X-API-Key": "s3cret"}).status_code == 200
    assert c.get("/health").status_code == 200  # health stays open for monitors
    assert c.get("/health").json()["api_key_required"] is True  # the page asks for the key
    assert c.post("/v1/predict").status_code == 401  # the key is checked before the fields
    assert c.get("/v1/models").status_code == 401


def test_full_queue_503_with_retry_after(model_path):  # noqa: F811
    model = load_model(str(model_path))
    release = threading.Event()
    real = model.predict_films

    def slow(*args, **kwargs):
        release.wait(10)
        return real(*args, **kwargs)

    model.predict_films = slow
    app = create_app(model, Settings(workers=1, queue=0))
    c = TestClient(app)
    results = []
    t = threading.Thread(target=lambda: results.append(
        c.post("/v1/predict", files={"file": ("f.png", png(), "image/png")}, data={"sex": "F"})))
    t.start()
    for _ in range(200):  # wait until the first request holds the only slot
        if app.state.gate.inside:
            break
        threading.Event().wait(0.02)
    r = c.post("/v1/predict", files={"file": ("f.png", png(), "image/png")}, data={"sex": "F"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert c.get("/health").status_code == 200  # responsive while inference runs
    release.set()
    t.join()
    assert results[0].status_code == 200


def test_nothing_written_unless_asked(model_path, tmp_path, monkeypatch):  # noqa: F811
    from starlette.formparsers import MultiPartParser

    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    c = TestClient(create_app(load_model(str(model_path))))
    assert c.post("/v1/predict", files={"file": ("f.png", png(), "image/png")},
                  data={"sex": "M"}).status_code == 200
    assert sorted(tmp_path.rglob("*")) == before
    # uploads up to the limit stay in memory (Starlette would spool parts over 1 MB to disk)
    assert MultiPartParser.spool_max_size > Settings().max_upload_bytes
    keep = tmp_path / "kept"
    keep.mkdir()
    c = TestClient(create_app(load_model(str(model_path)), Settings(keep_uploads=keep)))
    c.post("/v1/predict", files={"file": ("f.png", png(), "image/png")}, data={"sex": "M"})
    assert len(list(keep.iterdir())) == 1


def test_report_pdf(client):
    r = client.post("/v1/report", files={"file": ("f.png", png(), "image/png")},
                    data={"sex": "M", "chronological_age_months": "90"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and len(r.content) > 10_000
    assert 'filename="bone-age-f.pdf"' in r.headers["content-disposition"]
    r = client.post("/v1/report", files={"file": ("f.png", png(), "image/png")},
                    data={"sex": "M", "identifier": "ACC 77/1", "study_date": "2026-01-31"})
    assert 'filename="bone-age-ACC_77_1.pdf"' in r.headers["content-disposition"]
    pypdf = pytest.importorskip("pypdf")
    import io

    text = pypdf.PdfReader(io.BytesIO(r.content)).pages[0].extract_text()
    assert "ACC 77/1" in text and "2026-01-31" in text
    r = client.post("/v1/report", files={"file": ("f.png", png(), "image/png")},
                    data={"sex": "M", "study_date": "31.01.2026"})
    assert r.status_code == 400 and "study_date" in r.json()["error"]
    bad = client.post("/v1/report", files={"file": ("f.txt", b"text", "text/plain")},
                      data={"sex": "M"})
    assert bad.status_code == 415


def test_bundled_model_on_onnx_runtime_answers_without_heatmap():
    """A clinic's torch-less install: the bundled model through ONNX Runtime; a heatmap request
    still gets its estimate, with a warning instead of the picture."""
    app = create_app(load_model("default", backend="onnx"), Settings())
    c = TestClient(app)
    assert c.get("/health").json()["model"] == "default"
    r = c.post("/v1/predict", files={"file": ("f.png", png(), "image/png")},
               data={"sex": "M", "heatmap": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["heatmap"] is None and 0 < body["bone_age_months"] < 240
    assert decode_data_url(body["film"]).shape[:2] == (400, 320)  # the film, even on ONNX
    assert any("needs the PyTorch backend" in w for w in body["warnings"])
