"""The Python API: `load_model()` and `BoneAgeModel.predict()`, the same numbers as the CLI.

    from boneage import load_model
    model = load_model("runs/dn121")            # a run folder, a checkpoint, or an .onnx
    r = model.predict("film.png", sex="F", chronological_age_months=120)
    print(r.bone_age_months, r.interval_low_months, r.interval_high_months, r.sds, r.category)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from boneage.data.images import decode_image, read_bytes, sniff_format
from boneage.data.labels import parse_sex
from boneage.errors import BoneAgeError, install_hint
from boneage.inference.predictor import Predictor, TorchPredictor
from boneage.models.checkpoint import BUNDLED, installed_name, resolve_model_path
from boneage.preprocess.steps import Pipeline, ToUint8


def _about(text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"description": text})


@dataclass
class BoneAgeResult:
    """One film's answer. These fields, in this order, are the one list of result fields:
    the CSV columns, the JSON keys, the API schema (service/schemas.py) and the report read
    them from here."""

    file: str = field(metadata={"description": "the film's file name (or 'upload')"})
    sex: str = field(metadata={"description": "M or F"})
    bone_age_months: float = field(metadata={"description": "estimated bone age, months"})
    bone_age_years: float = field(metadata={"description": "the same, in years"})
    interval_low_months: float | None = _about("90% prediction interval, lower end")
    interval_high_months: float | None = _about("90% prediction interval, upper end")
    chronological_age_months: float | None = _about("the child's age, months, when given")
    difference_months: float | None = _about("bone age - chronological age")
    sds: float | None = _about("SDS against Greulich & Pyle / Brush SDs")
    category: str | None = _about("delayed | normal | advanced, each only where the whole 90% "
                                  "interval says so; else indeterminate (the reason in notes)")
    height_cm: float | None = _about("the child's height, cm, when given (or the DICOM's "
                                     "PatientSize)")
    height_sds: float | None = _about("height SDS against the growth reference")
    target_height_cm: float | None = _about("mid-parental target height, cm")
    target_height_low_cm: float | None = _about("lower end of the target height range, cm")
    target_height_high_cm: float | None = _about("upper end of the target height range, cm")
    weight_kg: float | None = _about("the child's weight, kg, when given (or the DICOM's "
                                     "PatientWeight)")
    predicted_adult_height_cm: float | None = _about("predicted adult height, cm, by Bayley-"
                                                     "Pinneau (null, with the reason in notes, "
                                                     "where the method does not apply)")
    predicted_adult_height_low_cm: float | None = _about("its 90% interval, lower end, cm (the "
                                                         "bone age's interval and the method's "
                                                         "error)")
    predicted_adult_height_high_cm: float | None = _about("its 90% interval, upper end, cm")
    rwt_adult_height_cm: float | None = _about("predicted stature at 18, cm, by Roche-Wainer-"
                                               "Thissen (needs the weight and both parents' "
                                               "heights)")
    rwt_adult_height_low_cm: float | None = _about("its 90% interval, lower end, cm")
    rwt_adult_height_high_cm: float | None = _about("its 90% interval, upper end, cm")
    growth_reference: str | None = _about("the growth reference of the height figures")
    notes: list[str] = field(default_factory=list, metadata={
        "description": "plain-language notes on the figures: why a category is indeterminate, "
                       "why an adult height is missing, the conventions used"})
    warnings: list[str] = field(default_factory=list, metadata={
        "description": "plain-language warnings; one ending 'the estimate is not meaningful' "
                       "voids the estimate"})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RESULT_COLUMNS = tuple(f.name for f in fields(BoneAgeResult))


@dataclass
class Film:
    """A film read for inference: 8-bit pixels and what its DICOM header said, if any."""

    name: str
    pixels: np.ndarray | None  # None once sent between processes without them
    male: bool | None = None
    age_months: float | None = None
    study_date: str | None = None  # ISO date, from the DICOM header
    patient_sex: str | None = None  # the DICOM's PatientSex as written (M, F, O, ...)
    notes: list[str] = field(default_factory=list)  # what the file says against a hand film
    height_cm: float | None = None  # the DICOM's PatientSize, in cm
    weight_kg: float | None = None  # the DICOM's PatientWeight, in kg
    patient_id: str | None = None  # the DICOM's PatientID (a follow-up series), never logged


def add_growth(r: BoneAgeResult, heights: Any, film: Film, male: bool,
               chronological_months: float | None, reference: str = "uk-who") -> None:
    """The height SDS, the target height and the adult height predictions into a result, where
    heights were given (or the DICOM's PatientSize and PatientWeight)."""
    from boneage.clinical.adult_height import bayley_pinneau, roche_wainer_thissen
    from boneage.clinical.growth import TARGET_RANGE_NOTE, Heights, growth
    from boneage.inference.quality import MEANINGLESS

    h = heights or Heights()
    from_header = ((h.height_cm is None and film.height_cm is not None)
                   or (h.weight_kg is None and film.weight_kg is not None))
    if from_header:
        h = Heights(h.height_cm if h.height_cm is not None else film.height_cm, h.mother_cm,
                    h.father_cm, h.weight_kg if h.weight_kg is not None else film.weight_kg)
    if not h:
        return
    try:
        g = growth(h, male, chronological_months, reference)
    except BoneAgeError as e:
        if not from_header or heights:
            raise
        r.warnings.append(f"the DICOM's PatientSize and PatientWeight were not used: {e}")
        return
    r.height_cm, r.weight_kg = h.height_cm, h.weight_kg
    r.height_sds, r.target_height_cm = g.height_sds, g.target_height_cm
    r.target_height_low_cm, r.target_height_high_cm = (g.target_height_low_cm,
                                                       g.target_height_high_cm)
    r.growth_reference = g.growth_reference
    r.warnings += g.warnings
    if r.target_height_low_cm is not None:
        r.notes.append(TARGET_RANGE_NOTE)
    if h.height_cm is None or any(MEANINGLESS in w for w in r.warnings):
        return
    iv = (r.interval_low_months, r.interval_high_months)
    bp = bayley_pinneau(h.height_cm, male, r.bone_age_months, chronological_months, *iv)
    r.predicted_adult_height_cm = bp.cm
    r.predicted_adult_height_low_cm, r.predicted_adult_height_high_cm = bp.low_cm, bp.high_cm
    rwt = roche_wainer_thissen(h.height_cm, h.weight_kg, h.mother_cm, h.father_cm, male,
                               r.bone_age_months, chronological_months, *iv)
    r.rwt_adult_height_cm = rwt.cm
    r.rwt_adult_height_low_cm, r.rwt_adult_height_high_cm = rwt.low_cm, rwt.high_cm
    r.notes += [p.reason for p in (bp, rwt) if p.reason]


def read_film(source: str | Path | bytes | np.ndarray, name: str | None = None) -> Film:
    if isinstance(source, np.ndarray):
        notes: list[str] = []
        return Film(name or "array", _array_pixels(source, name or "array", notes), notes=notes)
    data = source if isinstance(source, bytes) else read_bytes(source)
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    if sniff_format(data) == "dicom":
        from boneage.data.dicom import decode_dicom

        d = decode_dicom(data, label)
        return Film(label, ToUint8()(d.pixels, {}), d.male, d.age_months,
                    d.study_date.isoformat() if d.study_date else None,
                    patient_sex=d.patient_sex, notes=list(d.notes), height_cm=d.height_cm,
                    patient_id=d.patient_id, weight_kg=d.weight_kg)
    notes: list[str] = []
    return Film(label, ToUint8()(decode_image(data, label, notes), {}), notes=notes)


def _array_pixels(a: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    """A caller's array as a film's 8-bit grey levels, as a file's would be: H x W (any
    numeric type), or H x W x 1/3/4 (grey stored as colour, or colour, noted as such)."""
    from boneage.data.images import COLOUR_NOTE, is_colour, to_gray

    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise BoneAgeError(f"{name}: a film array holds real numbers, not {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))):
        raise BoneAgeError(f"{name}: a film array is H x W grey levels (or H x W x 3 colour), "
                           f"not shape {a.shape}")
    if a.size == 0:
        raise BoneAgeError(f"{name}: an empty film array, shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise BoneAgeError(f"{name}: the film array holds NaN or infinite values")
    a = ToUint8()(a, {})
    if is_colour(a):
        notes.append(COLOUR_NOTE)
    return to_gray(a)


def without_pixels(film: Film) -> Film:
    """The film's header facts without its pixels (cheap to send between processes)."""
    return replace(film, pixels=None)


def check_age(months: float | None, what: str = "chronological age") -> float | None:
    if months is None:
        return None
    try:
        m = float(months)
    except (TypeError, ValueError):
        raise BoneAgeError(f"{what} must be a number of months, got {months!r}") from None
    if not 0 <= m <= 240:
        raise BoneAgeError(f"{what} must be between 0 and 240 months, got {m:g}")
    return m


def given_sex(value: Any) -> bool | None:
    """The sex given (True for male), None when none was; an unrecognised value is an error."""
    if value is None or value == "":
        return None
    male = value if isinstance(value, bool) else parse_sex(value)
    if male is None:
        raise BoneAgeError(f"unknown sex {value!r} (use M or F)")
    return male


def resolve_sex(value: Any, film: Film, prefer: str = "given") -> bool:
    """The sex to estimate with: the one given, else the DICOM's PatientSex; `prefer="header"`
    trusts the header where both are there (a conflict is a warning either way:
    `sex_conflict`)."""
    male = given_sex(value)
    if prefer == "header" and film.male is not None:
        return film.male
    if male is not None:
        return male
    if film.male is not None:
        return film.male
    code = (film.patient_sex or "").strip()
    if code == "O":
        why = "the film's PatientSex is O (other): give M or F, the standard to compare with"
    elif code:
        why = f"the film's PatientSex is {code[:8]!r}, neither M nor F: give M or F"
    else:
        why = "give it, or use a DICOM with PatientSex"
    raise BoneAgeError(f"{film.name}: sex is required (the bone-age standards differ by sex); "
                       f"{why}")


def sex_conflict(value: Any, film: Film, used: bool) -> str | None:
    """A warning when the sex given and the DICOM header's PatientSex disagree (a wrong film or
    a wrong form moves the estimate by months), naming both and the one used."""
    given = given_sex(value)
    if given is None or film.male is None or given == film.male:
        return None
    sx = "M" if given else "F"
    hx = "M" if film.male else "F"
    return (f"sex given as {sx} but the DICOM header says {hx}: estimated as "
            f"{'M' if used else 'F'}; check the film and the form")


def prepare_film(film: Film, pipeline: Pipeline) -> tuple[np.ndarray, dict[str, Any]]:
    """The model's cached preprocessing, plus what the quality checks need from the raw film."""
    from boneage.inference.quality import border_brightness, texture
    from boneage.preprocess.hand import finger_gaps

    meta: dict[str, Any] = {"border_brightness": border_brightness(film.pixels),
                            "finger_gaps": finger_gaps(film.pixels),
                            "texture": texture(film.pixels),
                            "film_shape": film.pixels.shape[:2]}
    return pipeline.cached_part(film.pixels, meta), meta


class BoneAgeModel:
    def __init__(self, predictor: Predictor, tta: bool = True,
                 explainer: Predictor | None = None, cam: Any = None) -> None:
        self.predictor = predictor
        self.tta = tta
        self.card = predictor.card
        # the PyTorch network the heatmaps differentiate: the predictor itself, or the PyTorch
        # twin of an ONNX graph (the same weights), so estimates run on the faster backend;
        # without PyTorch, the ONNX heatmap graph beside the model (inference/onnx.py OnnxCam)
        self.explainer = explainer or (predictor if hasattr(predictor, "model") else None)
        self.cam = cam if self.explainer is None else None

    @property
    def name(self) -> str:
        """The card's name, else the run folder's (for RUN/best.safetensors), else the file's;
        a recalibrated copy says so (the page, the API's answers and the PDF report show it)."""
        p = self.predictor.path
        fallback = f"{p.parent.name}/{p.stem}" if p.stem in ("best", "last") else p.stem
        again = self.card.get("recalibrated")
        return str(self.card.get("name", fallback)) + (
            f", recalibrated on {again['labels']}" if again else "")

    def predict(self, image: str | Path | bytes | np.ndarray, sex: Any = None,
                chronological_age_months: float | None = None, height_cm: Any = None,
                mother_height_cm: Any = None, father_height_cm: Any = None,
                growth_reference: str = "uk-who", weight_kg: Any = None) -> BoneAgeResult:
        """One film; the heights (cm, optional) add the height SDS, the parents' target
        height and the adult height predictions, the weight (kg) the Roche-Wainer-Thissen one
        (docs/growth.md)."""
        from boneage.clinical.growth import Heights

        heights = Heights.checked(height_cm, mother_height_cm, father_height_cm, weight_kg)
        return self.predict_films([read_film(image)], [sex], [chronological_age_months],
                                  heights=[heights], growth_reference=growth_reference)[0]

    def predict_batch(self, images: list, sex: Any = None,
                      chronological_age_months: Any = None) -> list[BoneAgeResult]:
        n = len(images)
        sexes = sex if isinstance(sex, (list, tuple)) else [sex] * n
        ages = (chronological_age_months if isinstance(chronological_age_months, (list, tuple))
                else [chronological_age_months] * n)
        for what, values in (("sex", sexes), ("chronological_age_months", ages)):
            if len(values) != n:
                raise BoneAgeError(f"{what}: {len(values)} value(s) for {n} film(s); give one "
                                   "per film, or one for all")
        if n == 0:
            return []
        return self.predict_films([read_film(i) for i in images], sexes, ages)

    def prepare(self, film: Film) -> tuple[np.ndarray, dict[str, Any]]:
        return prepare_film(film, self.predictor.pipeline)

    def predict_films(self, films: list[Film], sexes: list, ages: list,
                      prepared: list[tuple[np.ndarray, dict]] | None = None,
                      sex_source: str = "given", heights: list | None = None,
                      growth_reference: str = "uk-who") -> list[BoneAgeResult]:
        """The core: prepared images -> (TTA) model -> interval, comparison, warnings.
        `sex_source` says which sex wins where the given one and the DICOM's differ;
        `heights` (clinical/growth.py Heights per film) add the growth figures."""
        from boneage.clinical.reference import categorise, compare_ages, reference_range
        from boneage.inference.quality import MEANINGLESS, novelty, quality_warnings
        from boneage.inference.uncertainty import has_interval, interval

        male = np.array([resolve_sex(s, f, sex_source) for s, f in zip(sexes, films, strict=True)])
        cas, notes = [], []
        for a, f, s, m in zip(ages, films, sexes, male, strict=True):
            note = [w for w in (sex_conflict(s, f, bool(m)),) if w]
            if a is None and f.age_months is not None and not 0 <= f.age_months <= 240:
                note.append(f"DICOM age {f.age_months:.0f} months ignored (outside 0-240)")
                cas.append(None)
            else:
                cas.append(check_age(a if a is not None else f.age_months))
            notes.append(note)
        prepared = prepared or [self.prepare(f) for f in films]
        imgs = np.stack([p for p, _ in prepared])
        cal = self.card.get("calibration")
        est = self.predictor.estimate(imgs, male, self.tta)
        ref = self.card.get("embedding")
        nov = novelty(est.features, ref) if ref and est.features is not None else None
        with_interval = has_interval(cal, self.tta)
        if with_interval:
            lows, highs = interval(est.mean, est.spread, cal, self.tta, male)
        results = []
        for i, film in enumerate(films):
            ba = float(est.mean[i])
            r = BoneAgeResult(film.name, "M" if male[i] else "F", round(ba, 1),
                              round(ba / 12, 2), warnings=list(notes[i]))
            if with_interval:
                r.interval_low_months = round(float(lows[i]), 1)
                r.interval_high_months = round(float(highs[i]), 1)
            else:
                r.warnings.append("model not calibrated: no interval")
            quality = film.notes + quality_warnings(prepared[i][1], ba,
                                                    None if nov is None else float(nov[i]), ref)
            if cas[i] is not None:
                c = compare_ages(ba, cas[i], bool(male[i]))
                r.chronological_age_months = round(cas[i], 1)
                r.difference_months = c.difference_months
                # an SDS and a category only where they mean something
                if not c.in_range:
                    lo, hi = reference_range(bool(male[i]))
                    r.warnings.append(f"chronological age outside the reference range "
                                      f"({lo:.0f}-{hi:.0f} months): no SDS or category")
                elif not any(MEANINGLESS in w for w in quality):
                    r.sds = c.sds
                    r.category, why = categorise(ba, r.interval_low_months,
                                                 r.interval_high_months, cas[i], bool(male[i]))
                    if why:
                        r.notes.append(why)
                    if min(ba, cas[i]) < YOUNG_MONTHS:
                        r.warnings.append(young(self.card))
                    elif abs(c.sds) > IMPLAUSIBLE_SDS:
                        r.warnings.append(implausible(c.sds))
            r.warnings += quality
            add_growth(r, heights[i] if heights else None, film, bool(male[i]), cas[i],
                       growth_reference)
            results.append(r)
        return results

    @property
    def explains(self) -> bool:
        """Whether heatmaps are available: the PyTorch network, or the ONNX heatmap graph."""
        return self.explainer is not None or self.cam is not None

    def heatmap(self, film: Film, sex: Any, prepared: tuple[np.ndarray, dict] | None = None,
                method: str = "gradcampp") -> np.ndarray:
        """The heatmap over the film at its own shape (downscaled for display), BGR uint8, on
        PyTorch or, without it, on the ONNX heatmap graph (Grad-CAM++ only). `prepared`: what
        `prepare(film)` returned, to reuse it."""
        from boneage.inference.explain import display_film, overlay, saliency, to_film

        if not self.explains:
            raise BoneAgeError(NO_HEATMAP)
        img, meta = prepared if prepared is not None else self.prepare(film)
        x = self.predictor.pipeline.tensor_part(img, {})
        if self.explainer is not None:
            cam = saliency(self.explainer.model, x, resolve_sex(sex, film), method)
        elif method != "gradcampp":
            raise BoneAgeError(f"the {method} heatmap needs PyTorch (the ONNX heatmap graph "
                               "gives Grad-CAM++)")
        else:
            cam = self.cam.saliency(x, resolve_sex(sex, film))
        shown = display_film(film.pixels)
        return overlay(shown, to_film(cam, meta, shown.shape[:2]))


IMPLAUSIBLE_SDS = 4.0  # beyond it, a wrong age, sex or film is far likelier than the child


def implausible(sds: float) -> str:
    """The plausibility warning: an SDS beyond +/-4 names what is usually wrong."""
    return (f"implausible: SDS {sds:+.1f} is beyond +/-{IMPLAUSIBLE_SDS:.0f}, which almost "
            "always means a wrong chronological age, a wrong sex or another child's film; "
            "check them before reading the category")


YOUNG_MONTHS = 24.0  # under two years of bone or chronological age


def young(card: dict) -> str:
    """The under-two warning: the model's own measured limits there, not a blame on the
    inputs (the SD of bone age at that age is a few months, smaller than the model's error)."""
    band = ((card.get("heldout_metrics") or {}).get("by_age_band") or {}).get("0-2 y") or {}
    measured = (f"on the {band['n']} held-out films under 2 years its error was {band['mae']:.1f}"
                f" months on average (bias {band['bias']:+.1f})"
                if band.get("mae") is not None else "it was not measured under 2 years")
    return ("under 2 years the model is less certain than the reference's SD: " + measured
            + "; its SDS and category there say more about the model than the child")


NO_HEATMAP = ("no heatmap for this model: it has no ONNX heatmap graph (re-export it with "
              "`boneage export`) and PyTorch is not installed")


def _installed(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def load_predictor(spec: str | Path, backend: str = "torch") -> Predictor:
    """The network + preprocessing + card behind `spec` on one backend (torch: an installed
    name, a run folder or a .safetensors checkpoint; onnx: an .onnx graph with its card)."""
    if backend == "torch":
        if not _installed("torch"):
            raise BoneAgeError(f"this model needs PyTorch ({install_hint('train')}), or use "
                               "an ONNX model with --backend onnx")
        return TorchPredictor.load(spec)
    if backend == "onnx":
        from boneage.inference.onnx import OnnxPredictor

        return OnnxPredictor.load(spec)
    raise BoneAgeError(f"unknown backend {backend!r} (torch or onnx)")


def _graph_beside(spec: str | Path) -> Path | None:
    if Path(spec).suffix == ".onnx":
        return None
    try:
        graph = resolve_model_path(spec).with_suffix(".onnx")
    except BoneAgeError:
        return None
    return graph if graph.is_file() else None


def load_model(spec: str | Path = "default", backend: str | None = None, tta: bool = True,
               explain: bool = True) -> BoneAgeModel:
    """An installed name ("default"), a run folder, a .safetensors checkpoint or an .onnx: the
    one loader behind every command, the service and the Python API.

    backend None: an installed model that ships an ONNX graph (the bundled one; it reads the
    same weights) estimates on ONNX Runtime when it is installed (1.8x faster here); anything
    else runs on PyTorch. A .onnx file always runs on ONNX Runtime; so does a run folder or
    checkpoint with its graph beside it (X.onnx by X.safetensors, as `calibrate --out` copies
    the bundled model) where PyTorch is not installed.

    Heatmaps (`explain`): on ONNX Runtime from the heatmap graph the export writes beside the
    model (X.cam.onnx: the same Grad-CAM++ as PyTorch's, correlation 1.000 on the 25 raw films,
    4x faster), so they need no PyTorch; where an export has none and the backend was chosen
    here, from the PyTorch network when it is installed."""
    name = installed_name(spec)
    twin = BUNDLED / f"{name}.onnx" if name else _graph_beside(spec)  # same weights file
    has_twin = twin is not None and twin.is_file()
    chosen, original = backend is None, spec
    if backend is None:
        has_torch = _installed("torch")
        fast = has_twin and (not has_torch or (name is not None and _installed("onnxruntime")))
        backend = "onnx" if Path(spec).suffix == ".onnx" or fast else "torch"
    if backend == "onnx" and has_twin:
        spec = twin
    predictor = load_predictor(spec, backend)
    explainer = cam = None
    if explain and backend == "onnx":
        from boneage.inference.onnx import OnnxCam

        cam = OnnxCam.beside(predictor)
        if (cam is None and chosen and Path(original).suffix != ".onnx"
                and _installed("torch")):
            explainer = load_predictor(original, "torch")
    return BoneAgeModel(predictor, tta=tta, explainer=explainer, cam=cam)
