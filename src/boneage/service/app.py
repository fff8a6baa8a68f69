"""The web service: one model loaded once, inference off the event loop in a bounded pool with
a bounded queue, JSON errors with the right status, and no patient data in logs or on disk.

Statuses: 400 missing or invalid field, 401 missing or wrong API key, 404/405 no such route or
method, 408 request body too slow, 413 upload or image too large, 415 not an image or DICOM, 422
unreadable image, 503 (with Retry-After) queue full. Every error is `{"error": "..."}`.

Uploads are read by our own bounded reader, not by the framework's form parser: the whole body
is read before a queue slot is taken (a slow client holds a connection, never a place in the
queue), counted as it arrives and refused with 413 as soon as it passes the limit (with or
without Content-Length); a stalled or too slow body ends with 408; one address may send at most
`per_client` bodies at once (429); the parts stay in memory (nothing reaches the disk).

Security headers (a CSP without inline script or style, frame-ancestors none, nosniff,
no-referrer) go on every answer. An unexpected exception is logged as its type and route only,
never a traceback or its message (which could carry patient data); a client that hangs up
mid-body is one INFO line.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from boneage import __version__
from boneage.data.images import MAX_PIXELS, MIN_SIDE, sniff_format
from boneage.errors import BoneAgeError, TooLarge, install_hint
from boneage.evaluation.report import jpeg_data_url
from boneage.inference.api import BoneAgeModel, check_age, read_film, resolve_sex
from boneage.service.schemas import Error, Health, ModelInfo, ModelList, Prediction

log = logging.getLogger("boneage.service")

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields around the file
BODY_IDLE_S = 20.0  # the longest pause allowed between two pieces of a request body
BODY_TOTAL_S = 300.0  # the longest a whole body may take to arrive
MIN_RATE = 4096  # bytes per second a body must keep up, over any RATE_WINDOW_S, after the grace
BODY_GRACE_S = 10.0
RATE_WINDOW_S = 10.0  # a fast start does not buy a slow tail
MIN_SIDE_DOC = (f"at least {MIN_SIDE} x {MIN_SIDE} pixels, at most {MAX_PIXELS // 10**6} "
                "megapixels")  # the limits data/images.py enforces
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FIELDS = {
    "file": ("binary", f"the film: PNG, JPEG or DICOM, {MIN_SIDE_DOC}, a hand radiograph"),
    "sex": ("string", "M or F (optional for a DICOM with PatientSex)"),
    "sex_source": ("string", "which sex to trust when the form and the DICOM's PatientSex "
                   "differ: form (default) or header; either way the result warns"),
    "chronological_age_months": ("number", "months; optional"),
    "heatmap": ("boolean", "include a Grad-CAM++ overlay on the film (/v1/predict)"),
    "height_cm": ("number", "the child's height, cm; optional: the height SDS and the "
                  "Bayley-Pinneau adult height"),
    "weight_kg": ("number", "the child's weight, kg; optional: with the heights, the "
                  "Roche-Wainer-Thissen adult height"),
    "mother_height_cm": ("number", "the mother's height, cm; with the father's: the target "
                         "height"),
    "father_height_cm": ("number", "the father's height, cm"),
    "identifier": ("string", "patient or accession identifier, printed on the report and in its "
                   "file name; never stored or logged (/v1/report)"),
    "study_date": ("string", "YYYY-MM-DD, printed on the report (else the DICOM's StudyDate; "
                   "/v1/report)"),
}


def _form_doc(names: tuple[str, ...]) -> dict[str, Any]:
    """The multipart body for the OpenAPI description (the form is parsed by `read_form`)."""
    props = {n: ({"type": "string", "format": "binary"} if t == "binary" else {"type": t})
             | {"description": d} for n, (t, d) in FIELDS.items() if n in names}
    if "sex" in props:
        props["sex"]["enum"] = ["M", "F"]
    if "sex_source" in props:
        props["sex_source"]["enum"] = ["form", "header"]
    if "chronological_age_months" in props:
        props["chronological_age_months"] |= {"minimum": 0, "maximum": 240}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": props}}}}}


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
    docs: bool = False  # /docs loads Swagger UI from a CDN: off unless asked for
    per_client: int = 16  # request bodies one client address may send at once


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


@dataclass
class Form:
    file: bytes
    filename: str
    fields: dict[str, str]

    def text(self, name: str, max_len: int = 200) -> str | None:
        v = self.fields.get(name)
        if v is None or v.strip() == "":
            return None
        if len(v) > max_len:
            raise HTTPError(400, f"{name}: longer than {max_len} characters")
        return v.strip()

    def flag(self, name: str) -> bool:
        v = (self.text(name) or "false").lower()
        if v not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise HTTPError(400, f"{name}: expected true or false")
        return v in ("true", "1", "yes", "on")


class Disconnected(Exception):
    """The client hung up before its body arrived: nobody is left to answer."""


class ByteBudget:
    """The bytes of request bodies held in memory at once, across all requests: a body whose
    next piece would pass the budget is refused (503), so memory stays bounded however many
    clients send at once, while slow clients, holding a few bytes each, cost almost nothing."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self.lock:
            self.used -= n


async def read_body(request: Request, limit: int, budget: ByteBudget | None = None,
                    held: list[int] | None = None) -> bytes:
    """The request body, counted as it arrives: 413 as soon as it passes `limit` (whatever
    Content-Length says, or without one), 503 when the server's body budget is spent, 408 when
    it stalls, arrives slower than MIN_RATE over the last RATE_WINDOW_S once BODY_GRACE_S
    have passed (a client that sends all but the last bytes and then trickles holds its
    budget seconds, not minutes), or takes longer than BODY_TOTAL_S. `held[0]` counts what it
    took from `budget` (the caller gives it back when the request is done)."""
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise HTTPError(413, f"upload over the limit of {limit // 2**20} MB")
    body = bytearray()
    start = time.monotonic()
    marks = collections.deque([(start, 0)])  # (time, bytes so far), the window's start first
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), BODY_IDLE_S)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise HTTPError(408, "the request body stopped arriving") from None
        except ClientDisconnect:
            raise Disconnected() from None
        if budget is not None:
            if not budget.take(len(chunk)):
                raise HTTPError(503, "busy: too many uploads in progress, retry shortly",
                                {"Retry-After": "1"})
            held[0] += len(chunk)
        body += chunk
        if len(body) > limit:
            raise HTTPError(413, f"upload over the limit of {limit // 2**20} MB")
        now = time.monotonic()
        if now - start > BODY_TOTAL_S:
            raise HTTPError(408, "the request body took too long to arrive")
        marks.append((now, len(body)))
        while len(marks) > 1 and marks[1][0] <= now - RATE_WINDOW_S:
            marks.popleft()
        since, then = marks[0]
        if now - start > BODY_GRACE_S and len(body) - then < MIN_RATE * (now - since):
            raise HTTPError(408, f"the request body arrives too slowly (under "
                            f"{MIN_RATE // 1024} kB/s)")
    return bytes(body)


async def read_form(request: Request, max_upload: int, budget: ByteBudget | None = None,
                    held: list[int] | None = None) -> Form:
    """One multipart form with one file, parsed in memory."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPError(400, "expected a multipart/form-data upload with a 'file' field")
    pending = [await read_body(request, max_upload + FORM_OVERHEAD, budget, held)]

    async def once():
        yield pending.pop()  # the parser holds the only reference to the body while it parses

    parser = MultiPartParser(request.headers, once(), max_files=1, max_fields=len(FIELDS))
    parser.spool_max_size = len(pending[0]) + 1  # this parser's parts stay in memory
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise HTTPError(400, f"malformed upload: {e.message}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPError(400, "file: a film is required (a 'file' field)")
    data = await upload.read()
    await upload.close()
    if len(data) > max_upload:
        raise HTTPError(413, f"upload over the limit of {max_upload // 2**20} MB")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise HTTPError(400, f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    return Form(data, Path(upload.filename or "upload").name or "upload", fields)


# ---------------------------------------------------------------- dependencies (each alone)
def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_model(request: Request) -> BoneAgeModel:
    return request.app.state.model


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelDep = Annotated[BoneAgeModel, Depends(get_model)]


def require_key(request: Request, settings: SettingsDep) -> None:
    """401 unless the request carries the API key (X-API-Key, or Authorization: Bearer), when
    one is set. On every /v1/ route by construction (the router's dependency), before any
    body is read."""
    if settings.api_key is None:
        return
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = given or auth[7:]
    if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
        raise HTTPError(401, "missing or wrong API key (send X-API-Key)")


class ClientBodies:
    """How many request bodies each client address is sending now: a few slow clients may not
    hold every connection."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count, self.lock = limit, {}, threading.Lock()

    def enter(self, who: str) -> bool:
        with self.lock:
            n = self.count.get(who, 0)
            if n >= self.limit:
                return False
            self.count[who] = n + 1
            return True

    def leave(self, who: str) -> None:
        with self.lock:
            self.count[who] -= 1
            if not self.count[who]:
                del self.count[who]


async def received_form(request: Request, settings: Settings, held: list[int]) -> Form:
    """The whole form, read under the per-address limit (429 beyond it) and the server's byte
    budget for bodies in memory (503 beyond it)."""
    bodies: ClientBodies = request.app.state.bodies
    who = request.client.host if request.client else "?"
    if not bodies.enter(who):
        raise HTTPError(429, "too many uploads at once from this address, retry shortly",
                        {"Retry-After": "1"})
    try:
        return await read_form(request, settings.max_upload_bytes, request.app.state.budget,
                               held)
    finally:
        bodies.leave(who)


@dataclass
class Upload:
    """A checked upload: the film's bytes and the form's fields, validated before any work."""

    form: Form
    sex: str | None
    age: float | None
    heatmap: bool
    identifier: str | None
    study_date: str | None
    sex_source: str = "form"
    heights: Any = None  # clinical/growth.py Heights


async def upload(request: Request, settings: SettingsDep) -> AsyncIterator[Upload]:
    """The bounded multipart upload and its fields (400/408/413/415 before any inference),
    read whole before a place in the inference queue is taken (503 with Retry-After when the
    queue is full), the place given back when the request is done; kept on disk only with
    --keep-uploads."""
    budget: ByteBudget = request.app.state.budget
    held = [0]
    try:
        up = checked(await received_form(request, settings, held), settings)
        gate: Gate = request.app.state.gate
        if not gate.enter():
            raise HTTPError(503, "busy: the inference queue is full, retry shortly",
                            {"Retry-After": "1"})
        try:
            yield up
        finally:
            gate.leave()
    finally:
        budget.give(held[0])


def checked(form: Form, settings: Settings) -> Upload:
    """The form's fields validated (400/415), in one place for every route."""
    try:
        age = check_age(form.text("chronological_age_months", 32))
    except BoneAgeError as e:
        raise HTTPError(400, f"chronological_age_months: {e}") from None
    sex = form.text("sex", 16)
    source = (form.text("sex_source", 16) or "form").lower()
    if source not in ("form", "header"):
        raise HTTPError(400, "sex_source: expected form or header")
    identifier = form.text("identifier", 120)
    study = form.text("study_date", 10)
    if study and not _is_date(study):
        raise HTTPError(400, "study_date: expected YYYY-MM-DD")
    heatmap = form.flag("heatmap")
    from boneage.clinical.growth import Heights

    try:
        heights = Heights.checked(form.text("height_cm", 32), form.text("mother_height_cm", 32),
                                  form.text("father_height_cm", 32), form.text("weight_kg", 32))
    except BoneAgeError as e:
        raise HTTPError(400, f"height: {e}") from None
    if not form.file:
        raise HTTPError(400, "file: empty upload")
    if sniff_format(form.file) is None:
        raise HTTPError(415, "file: not an image (PNG, JPEG or DICOM expected)")
    if settings.keep_uploads is not None:
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.upload"
        (settings.keep_uploads / name).write_bytes(form.file)
    return Upload(form, sex, age, heatmap, identifier, study, source, heights)


UploadDep = Annotated[Upload, Depends(upload)]


# ------------------------------------------------------------------ the work (no framework)
@dataclass
class Estimate:
    result: Any  # BoneAgeResult
    film: Any  # Film
    heatmap: Any  # BGR overlay or None


def estimate(model: BoneAgeModel, up: Upload, heatmap: bool) -> Estimate:
    """Read, check and estimate one uploaded film (runs in the inference pool); each film
    is read and prepared once, for the estimate and the heatmap."""
    name = up.form.filename
    try:
        film = read_film(up.form.file, name=name)
    except BoneAgeError as e:
        msg = str(e).removeprefix(f"{name}: ")
        raise HTTPError(413 if isinstance(e, TooLarge) else 422, f"file: {msg}") from None
    source = "header" if up.sex_source == "header" else "given"
    if up.sex is None and film.male is None and not film.patient_sex:
        raise HTTPError(400, "sex: choose M or F (the bone-age standards differ by sex; "
                        "this film carries no PatientSex)")
    try:
        male = resolve_sex(up.sex, film, source)
    except BoneAgeError as e:
        raise HTTPError(400, f"sex: {str(e).removeprefix(f'{name}: ')}") from None
    prepared = model.prepare(film)
    result = model.predict_films([film], [up.sex], [up.age], [prepared], sex_source=source,
                                 heights=[up.heights])[0]
    heat = None
    if heatmap and model.explains:
        heat = model.heatmap(film, male, prepared)
    return Estimate(result, film, heat)


def as_json(model: BoneAgeModel, est: Estimate) -> dict[str, Any]:
    from boneage.inference.explain import display_film

    return {**est.result.to_dict(), "model": model.name, "study_date": est.film.study_date,
            "film": jpeg_data_url(display_film(est.film.pixels)),
            "heatmap": None if est.heatmap is None else jpeg_data_url(est.heatmap)}


def as_pdf(model: BoneAgeModel, est: Estimate, up: Upload) -> tuple[bytes, str]:
    from boneage.inference.report import pdf_report, report_filename

    film = est.film
    return (pdf_report(model, est.result, film.pixels, est.heatmap, identifier=up.identifier,
                       study_date=up.study_date or film.study_date, file_name=film.name),
            report_filename(up.identifier or Path(film.name).stem))


def as_dicom(model: BoneAgeModel, up: Upload) -> tuple[bytes, str]:
    """The film's result as DICOM in its own study: a zip of the Structured Report and the
    Secondary Capture image, as `predict --dicom-out` writes them."""
    import importlib.util
    import io
    import zipfile

    if sniff_format(up.form.file) != "dicom":
        raise HTTPError(415, "file: DICOM results go into the film's own study: send a DICOM "
                        "film (PNG and JPEG have no study)")
    if importlib.util.find_spec("highdicom") is None:
        raise HTTPError(503, f"DICOM results need highdicom on the server: "
                        f"{install_hint('dicom')}")
    from boneage.inference.dicom_results import estimate_files

    est = estimate(model, up, True)
    files = estimate_files(model, up.form.file, up.form.filename, est.result, est.film.pixels,
                           est.heatmap)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    from boneage.inference.report import report_filename

    name = report_filename(Path(up.form.filename).stem).removesuffix(".pdf")
    return buf.getvalue(), f"{name}.dicom.zip"


async def in_pool(request: Request, fn) -> Any:
    """Run fn() in the app's bounded inference pool, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(request.app.state.pool, fn)


# --------------------------------------------------------------------------------- the routes
ERRORS = {code: {"model": Error} for code in (400, 401, 408, 413, 415, 422, 429, 503)}
STATIC = Path(__file__).parent / "static"
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)],
               responses={401: {"model": Error}})


@v1.head("/reference", include_in_schema=False)
@v1.get("/reference")
async def reference_table() -> dict[str, Any]:
    """The Greulich & Pyle / Brush Foundation table (for the bone age chart)."""
    from boneage.clinical.reference import reference

    return reference()


@v1.head("/models", include_in_schema=False)
@v1.get("/models", response_model=ModelList)
async def models(model: ModelDep) -> ModelList:
    card = model.card
    cal = card.get("calibration") or {}
    val = (card.get("metrics") or {}).get("val") or {}
    return ModelList(models=[ModelInfo(
        name=model.name, arch=card["arch"], input_size=card.get("input_size"),
        validation_mae_months=val.get("mae"), calibrated=bool(cal),
        interval_coverage=cal.get("coverage"))])


@v1.post("/predict", response_model=Prediction, responses=ERRORS,
         openapi_extra=_form_doc(("file", "sex", "sex_source", "chronological_age_months",
                                  "height_cm", "weight_kg", "mother_height_cm", "father_height_cm",
                                  "heatmap")))
async def predict(request: Request, up: UploadDep, model: ModelDep) -> dict[str, Any]:
    """The estimate for one film, with the film (and its heatmap) for display."""
    return await in_pool(request, lambda: as_json(model, estimate(model, up, up.heatmap)))


@v1.post("/report", response_class=Response, responses={
    200: {"content": {"application/pdf": {}}, "description": "one-page PDF report"}, **ERRORS},
    openapi_extra=_form_doc(("file", "sex", "sex_source", "chronological_age_months",
                             "height_cm", "weight_kg", "mother_height_cm", "father_height_cm",
                             "identifier", "study_date")))
async def report(request: Request, up: UploadDep, model: ModelDep) -> Response:
    """A one-page PDF report for one film."""
    pdf, filename = await in_pool(request, lambda: as_pdf(model, estimate(model, up, True), up))
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@v1.post("/dicom", response_class=Response, responses={
    200: {"content": {"application/zip": {}}, "description": "a zip of two DICOM files: the "
          "Structured Report (SR_<uid>.dcm) and the Secondary Capture image (SC_<uid>.dcm), "
          "in the film's study"}, **ERRORS},
    openapi_extra=_form_doc(("file", "sex", "sex_source", "chronological_age_months")))
async def dicom(request: Request, up: UploadDep, model: ModelDep) -> Response:
    """The result as DICOM, for a DICOM film: SR (TID 1500) and Secondary Capture image."""
    data, filename = await in_pool(request, lambda: as_dicom(model, up))
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status, headers=headers)


async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
    return _error(exc.status, exc.message, exc.headers)


async def _route_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    words = {404: "no such page or endpoint", 405: "method not allowed here"}
    return _error(exc.status_code, words.get(exc.status_code, str(exc.detail)),
                  getattr(exc, "headers", None))


async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
    return _error(400, f"{where}: {first.get('msg', 'invalid')}")


async def _disconnected(request: Request, exc: Disconnected) -> Response:
    log.info("%s %s: the client hung up before its upload arrived", request.method,
             request.url.path)
    return Response(status_code=400)  # nobody reads it


async def _access_log(request: Request, call_next):
    """Method, path, status and time only: never file names, DICOM tags or form values. An
    unexpected exception ends here: its type and the route are logged, never its message or a
    traceback (either could carry patient data), and the client gets a JSON 500."""
    t0 = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception as exc:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method,
                  request.url.path)
        response = _error(500, "internal error (logged on the server)")
    response.headers.update(SECURITY_HEADERS)
    log.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
             (time.perf_counter() - t0) * 1000)
    return response


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with the API key declared (X-API-Key, or Authorization: Bearer) on
    every /v1/ operation when the server requires one, so generated clients send it."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    schemes = {"ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
               "Bearer": {"type": "http", "scheme": "bearer"}}
    schema.setdefault("components", {})["securitySchemes"] = schemes
    if app.state.settings.api_key is not None:
        for path, ops in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"ApiKeyHeader": []}, {"Bearer": []}]
    app.openapi_schema = schema
    return schema


def create_app(model: BoneAgeModel, settings: Settings | None = None) -> FastAPI:
    """The app: state (model, settings, queue gate, pool), error handlers, routes, CORS."""
    s = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.pool.shutdown(wait=True, cancel_futures=True)  # finish what it started

    app = FastAPI(title="boneage", version=__version__, lifespan=lifespan,
                  docs_url="/docs" if s.docs else None, redoc_url=None,
                  description="Bone age from a hand radiograph. Research use only.")
    app.state.model, app.state.settings = model, s
    app.state.gate = Gate(s.workers + s.queue)
    app.state.pool = ThreadPoolExecutor(max_workers=s.workers, thread_name_prefix="infer")
    app.add_exception_handler(HTTPError, _http_error)
    app.add_exception_handler(StarletteHTTPException, _route_error)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(Disconnected, _disconnected)
    app.middleware("http")(_access_log)
    app.state.bodies = ClientBodies(s.per_client)
    # bodies in memory: as many whole uploads as the queue holds (the bound before bodies were
    # read ahead of the queue)
    app.state.budget = ByteBudget((s.workers + s.queue) * (s.max_upload_bytes + FORM_OVERHEAD))
    app.openapi = lambda: _openapi(app)
    if s.cors_origins:  # added last, so it wraps everything: errors carry CORS headers too
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(s.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.head("/health", include_in_schema=False)
    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", model=model.name, package_version=__version__,
                      model_version=(str(model.card["version"]) if model.card.get("version")
                                     else None),
                      api_key_required=s.api_key is not None, heatmaps=model.explains)

    app.include_router(v1)
    return app
