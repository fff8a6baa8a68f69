"""The web service: one model loaded once, inference off the event loop in a bounded pool with
a bounded queue, JSON errors with the right status, and no patient data in logs or on disk.

Statuses: 400 missing or invalid field, 401 missing or wrong API key, 413 upload or image too
large, 415 not an image or DICOM, 422 unreadable image, 503 (with Retry-After) queue full.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from boneage import __version__
from boneage.data.images import sniff_format
from boneage.errors import BoneAgeError
from boneage.inference.api import BoneAgeModel, check_age, read_film, resolve_sex
from boneage.service.schemas import Error, Health, ModelInfo, ModelList, Prediction

log = logging.getLogger("boneage.service")

# form fields, at module level so that FastAPI can resolve the postponed annotations
File_ = Annotated[UploadFile, File(description="the film: PNG, JPEG or DICOM")]
Sex = Annotated[str | None, Form(description="M or F (optional for a DICOM with PatientSex)")]
Age = Annotated[float | None, Form(description="months; optional")]
Heatmap = Annotated[bool, Form(description="include a Grad-CAM++ overlay on the film")]
Identifier = Annotated[str | None, Form(max_length=120, description="patient or accession "
                                        "identifier, printed on the report and used in its file "
                                        "name; never stored or logged")]
StudyDate = Annotated[str | None, Form(max_length=10, description="YYYY-MM-DD; printed on the "
                                       "report (else the DICOM's StudyDate)")]


def jpeg_data_url(image) -> str:
    """A picture for the page: JPEG (a 1,024 px film as PNG would be ~1 MB, as JPEG ~100 kB)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return "data:image/jpeg;base64," + base64.b64encode(buf).decode()


def _is_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Settings:
    api_key: str | None = None
    max_upload_bytes: int = 64 * 2**20
    workers: int = 1
    queue: int = 8
    keep_uploads: Path | None = None
    cors_origins: tuple[str, ...] = ()


class Gate:
    """At most workers + queue requests inside inference; the rest are turned away (503)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.inside, self.lock = limit, 0, threading.Lock()

    def enter(self) -> bool:
        with self.lock:
            if self.inside >= self.limit:
                return False
            self.inside += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


def create_app(model: BoneAgeModel, settings: Settings | None = None) -> FastAPI:
    s = settings or Settings()
    app = FastAPI(title="boneage", version=__version__,
                  description="Bone age from a hand radiograph. Research use only.")
    pool = ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="infer")
    gate = Gate(s.workers + s.queue)
    app.state.model, app.state.settings, app.state.gate = model, s, gate
    # keep uploads in memory: Starlette spools parts over 1 MB to temporary files on disk
    from starlette.formparsers import MultiPartParser

    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size,
                                         s.max_upload_bytes + 2**20)
    if s.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    @app.middleware("http")
    async def _access_log(request: Request, call_next):
        t0 = time.perf_counter()
        if s.api_key is not None and request.url.path.startswith("/v1/"):
            try:
                check_key(request)  # before the body is parsed: 401 comes first
            except HTTPError as e:
                return JSONResponse({"error": e.message}, e.status)
        response = await call_next(request)
        # method, path, status and time only: never file names, DICOM tags or form values
        log.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
                 (time.perf_counter() - t0) * 1000)
        return response

    def check_key(request: Request) -> None:
        if s.api_key is None:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:]
        if not secrets.compare_digest(given.encode(), s.api_key.encode()):
            raise HTTPError(401, "missing or wrong API key (send X-API-Key)")

    async def read_upload(request: Request, file: UploadFile) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > s.max_upload_bytes + 1_000_000:
            raise HTTPError(413, f"upload over the limit of {s.max_upload_bytes // 2**20} MB")
        data = bytearray()
        while chunk := await file.read(1 << 20):
            data += chunk
            if len(data) > s.max_upload_bytes:
                raise HTTPError(413, f"upload over the limit of {s.max_upload_bytes // 2**20} MB")
        if not data:
            raise HTTPError(400, "file: empty upload")
        if sniff_format(bytes(data)) is None:
            raise HTTPError(415, "file: not an image (PNG, JPEG or DICOM expected)")
        return bytes(data)

    def estimate(data: bytes, name: str, sex: str | None, age: float | None, heatmap: bool):
        """(result, film, heatmap or None); runs in the inference pool."""
        try:
            film = read_film(data, name=name)
        except BoneAgeError as e:
            msg = str(e).removeprefix(f"{name}: ")
            raise HTTPError(413 if "over the limit" in msg else 422, f"file: {msg}") from None
        if sex in (None, "") and film.male is None:
            raise HTTPError(400, "sex: choose M or F (the bone-age standards differ by sex; "
                            "this film carries no PatientSex)")
        try:
            male = resolve_sex(sex, film)
        except BoneAgeError as e:
            raise HTTPError(400, f"sex: {str(e).removeprefix(f'{name}: ')}") from None
        prepared = model.prepare(film)  # once, for the estimate and the heatmap
        result = model.predict_films([film], [male], [age], [prepared])[0]
        heat = None
        if heatmap and model.explains:
            heat = model.heatmap(film, male, prepared)
        elif heatmap:
            result.warnings.append("no heatmap: it needs the PyTorch backend")
        return result, film, heat

    def as_json(out) -> dict[str, Any]:
        from boneage.inference.explain import display_film

        result, film, heat = out
        return {**result.to_dict(), "model": model.name, "study_date": film.study_date,
                "film": jpeg_data_url(display_film(film.pixels)),
                "heatmap": None if heat is None else jpeg_data_url(heat)}

    async def run(request: Request, file: UploadFile, sex: str | None, age: Any,
                  heatmap: bool, render) -> Any:
        """Shared by /v1/predict and /v1/report: checks, the upload, the gated pool (the API
        key was checked by the middleware)."""
        try:
            age = check_age(age)
        except BoneAgeError as e:
            raise HTTPError(400, f"chronological_age_months: {e}") from None
        data = await read_upload(request, file)
        if s.keep_uploads is not None:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.upload"
            (s.keep_uploads / name).write_bytes(data)
        if not gate.enter():
            raise HTTPError(503, "busy: the inference queue is full, retry shortly",
                            {"Retry-After": "1"})
        try:
            loop = asyncio.get_running_loop()
            name = Path(file.filename or "upload").name or "upload"
            return await loop.run_in_executor(
                pool, lambda: render(estimate(data, name, sex, age, heatmap)))
        finally:
            gate.leave()

    static = Path(__file__).parent / "static"
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/v1/reference")
    async def reference_table() -> dict[str, Any]:
        """The Greulich & Pyle / Brush Foundation table (for growth charts)."""
        from boneage.inference.reference import reference

        return reference()

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", model=model.name, version=__version__,
                      api_key_required=s.api_key is not None, heatmaps=model.explains)

    @app.get("/v1/models", response_model=ModelList, responses={401: {"model": Error}})
    async def models(request: Request) -> ModelList:
        card = model.card
        cal = card.get("calibration") or {}
        val = (card.get("metrics") or {}).get("val") or {}
        return ModelList(models=[ModelInfo(
            name=model.name, arch=card["arch"], input_size=card.get("input_size"),
            validation_mae_months=val.get("mae"), calibrated=bool(cal),
            interval_coverage=cal.get("coverage"))])

    errors = {code: {"model": Error} for code in (400, 401, 413, 415, 422, 503)}

    @app.post("/v1/predict", response_model=Prediction, responses=errors)
    async def predict(request: Request, file: File_, sex: Sex = None,
                      chronological_age_months: Age = None,
                      heatmap: Heatmap = False) -> dict[str, Any]:
        return await run(request, file, sex, chronological_age_months, heatmap, as_json)

    @app.post("/v1/report", response_class=Response, responses={
        200: {"content": {"application/pdf": {}}, "description": "one-page PDF report"},
        **errors})
    async def report(request: Request, file: File_, sex: Sex = None,
                     chronological_age_months: Age = None, identifier: Identifier = None,
                     study_date: StudyDate = None) -> Response:
        from boneage.inference.report import pdf_report, report_filename

        if study_date and not _is_date(study_date):
            raise HTTPError(400, "study_date: expected YYYY-MM-DD")
        ident = (identifier or "").strip() or None

        def as_pdf(out) -> tuple[bytes, str]:
            result, film, heat = out
            return (pdf_report(model, result, film.pixels, heat, identifier=ident or film.name,
                               study_date=study_date or film.study_date),
                    report_filename(ident or Path(film.name).stem))

        pdf, filename = await run(request, file, sex, chronological_age_months, True, as_pdf)
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    return app
