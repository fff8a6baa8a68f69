"""The HTTP API, every endpoint and every error status, with FastAPI's test client."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402

from boneage.data.synthetic import synthetic_film  # noqa: E402
from boneage.inference.api import load_model  # noqa: E402
from boneage.service.app import Settings, create_app  # noqa: E402
from tests.helpers import png_header, running, write_dicom  # noqa: E402


def decode_data_url(url: str) -> np.ndarray:
    import base64

    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)


def png(seed: int = 0) -> bytes:
    film, _ = synthetic_film(height=400, width=320, seed=seed)
    return cv2.imencode(".png", film)[1].tobytes()


@pytest.fixture
def client(model_path):
    return TestClient(create_app(load_model(str(model_path)), Settings(max_upload_bytes=2**20)))


def test_health_models_and_docs(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "m" and h["package_version"]
    assert h["api_key_required"] is False and h["heatmaps"] is True
    m = client.get("/v1/models").json()["models"][0]
    assert m["arch"] == "resnet18" and m["calibrated"] is False
    # the interactive docs load scripts from a CDN: off unless asked for
    assert client.get("/docs").status_code == 404 and "error" in client.get("/docs").json()
    spec = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    fields = spec["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"file", "sex", "chronological_age_months", "heatmap"} <= set(fields)
    assert client.head("/").status_code == 200 and client.head("/health").status_code == 200


def test_predict_same_keys_as_cli_json(client):
    r = client.post("/v1/predict", files={"file": ("f.png", png(), "image/png")},
                    data={"sex": "F", "chronological_age_months": "100", "heatmap": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    from boneage.inference.api import RESULT_COLUMNS

    assert list(body)[: len(RESULT_COLUMNS)] == list(RESULT_COLUMNS)
    # the page's "Download the table (CSV)" writes the same columns as `predict --format csv`
    import json
    import re

    from boneage.service.app import STATIC

    js = (STATIC / "app.js").read_text()
    page_columns = json.loads(re.search(r"CSV_COLUMNS = (\[[^\]]*\])", js).group(1))
    assert page_columns == list(RESULT_COLUMNS)
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

    r = client.post("/v1/predict", files={"file": ("b.png", png_header(50_000, 50_000),
                                                   "image/png")}, data={"sex": "F"})
    assert r.status_code == 413


def test_every_error_is_json(client):
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json() == {"error": "no such page or endpoint"}
    r = client.get("/v1/predict")
    assert r.status_code == 405 and "error" in r.json()
    r = client.post("/v1/predict", content=b"--x\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and "error" in r.json()
    r = client.post("/v1/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]
    r = client.post("/v1/predict", files={"file": ("f.png", png(), "image/png")},
                    data={"sex": "F", "colour": "red"})
    assert r.status_code == 400 and "unknown field" in r.json()["error"]


def test_chunked_upload_refused_while_it_streams(model_path):
    """300 MB sent chunked, without Content-Length: the 413 arrives after about the limit has
    been counted, not after the whole body."""
    import select
    import socket

    app = create_app(load_model(str(model_path)), Settings(max_upload_bytes=4 * 2**20))
    with running(app) as port, socket.create_connection(("127.0.0.1", port)) as sk:
        sk.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        piece = b"\0" * (1 << 20)
        chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
        sent = 0
        try:
            while sent < 300 and not select.select([sk], [], [], 0)[0]:
                sk.sendall(chunk)
                sent += 1
        except OSError:  # the server closed the connection after answering
            pass
        answer = sk.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 40  # MB: stopped near the 4 MB limit, far from 300


def test_headers_trickled_slowly_are_cut_off(model_path):
    import socket

    app = create_app(load_model(str(model_path)))
    with running(app, HEADER_TIMEOUT_S=1.0) as port, \
            socket.create_connection(("127.0.0.1", port)) as sk:
        sk.settimeout(5)
        t0 = time.monotonic()
        closed = False
        for ch in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sk.sendall(bytes([ch]))
                time.sleep(0.1)
            except OSError:
                closed = True
                break
            if time.monotonic() - t0 > 4:
                break
        if not closed:
            closed = sk.recv(100) == b""
    assert closed and time.monotonic() - t0 < 4


def test_api_key(model_path):
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
    for method, route in (("get", "/v1/models"), ("get", "/v1/reference"),
                          ("post", "/v1/predict"), ("post", "/v1/report")):
        r = getattr(c, method)(route)
        assert r.status_code == 401 and "API key" in r.json()["error"], route


def test_cors_preflight_with_an_api_key(model_path):
    c = TestClient(create_app(load_model(str(model_path)), Settings(
        api_key="k", cors_origins=("https://ris.example",))))
    pre = c.options("/v1/predict", headers={
        "origin": "https://ris.example", "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://ris.example"
    denied = c.post("/v1/predict", headers={"origin": "https://ris.example"})
    assert denied.status_code == 401  # and the browser can read why:
    assert denied.headers["access-control-allow-origin"] == "https://ris.example"


def test_full_queue_503_with_retry_after(model_path):
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


def test_nothing_written_unless_asked(model_path, tmp_path, monkeypatch):
    import tempfile

    from starlette import formparsers

    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    spilled = []

    class Watched(tempfile.SpooledTemporaryFile):
        def rollover(self):  # the moment a spooled upload would go to a file on disk
            spilled.append(self._max_size)
            super().rollover()

    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", Watched)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", Watched)
    default_spool = formparsers.MultiPartParser.spool_max_size
    c = TestClient(create_app(load_model(str(model_path))))
    rng = np.random.default_rng(0)
    big = cv2.imencode(".png", (rng.random((1400, 1100)) * 255).astype(np.uint8))[1].tobytes()
    assert len(big) > 1.2 * default_spool  # over Starlette's 1 MB in-memory spool
    for data in (png(), big):
        r = c.post("/v1/predict", files={"file": ("f.png", data, "image/png")},
                   data={"sex": "M"})
        assert r.status_code == 200, r.text
    assert spilled == [] and sorted(tmp_path.rglob("*")) == before
    assert formparsers.MultiPartParser.spool_max_size == default_spool  # no process-wide change
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


def test_bundled_model_on_onnx_runtime_draws_its_heatmap():
    """A clinic's torch-less install: the bundled model through ONNX Runtime, its heatmap from
    the ONNX heatmap graph, at the film's shape, and no warning about it."""
    app = create_app(load_model("default", backend="onnx"), Settings())
    c = TestClient(app)
    assert c.get("/health").json()["model"] == "default"
    r = c.post("/v1/predict", files={"file": ("f.png", png(), "image/png")},
               data={"sex": "M", "heatmap": "yes"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 < body["bone_age_months"] < 240
    assert decode_data_url(body["film"]).shape[:2] == (400, 320)  # the film, even on ONNX
    assert decode_data_url(body["heatmap"]).shape[:2] == (400, 320)
    assert not any("heatmap" in w for w in body["warnings"])
