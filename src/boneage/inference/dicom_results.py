"""Results as DICOM, in the film's own study: a Structured Report (the TID 1500 measurement
report, as a Comprehensive SR) a RIS can read, and a Secondary Capture image a radiologist opens
in any viewer (the film at its shape with the heatmap, and the results beside it).

Both carry the film's patient, study and accession, in a new series, and reference the film.
Their UIDs are derived from the film's SOP Instance UID, the model's version and one root
(`--uid-root`): the same film read again by the same model gives the same instances, so a
result sent twice (a node killed after sending, before it could note it) is one instance in
the PACS, not two.

Codes: the bone age is LOINC 85151-9 "XR Bone age" in UCUM months, the chronological age DCM
121033 "Subject Age", the procedure SNOMED CT 252956001 "Greulich and Pyle bone age
assessment", the finding site SNOMED CT 85562004 "Hand"; what no standard code names (the
interval's ends, the difference, the SDS against Greulich & Pyle / Brush, the category) is
coded in this project's own scheme, 99BONEAGE (a private scheme, as DICOM PS3.16 allows), and
listed in docs/dicom.md."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from boneage.errors import BoneAgeError

UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs; set your own
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902
MANUFACTURER = "boneage (open source)"
SCHEME = "99BONEAGE"
# patient and study attributes the results copy: type 2 (present, possibly empty)
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "StudyID", "AccessionNumber", "ReferringPhysicianName")
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image


def _codes() -> dict[str, Any]:
    from highdicom.sr import CodedConcept

    def own(value: str, meaning: str) -> CodedConcept:
        return CodedConcept(value, SCHEME, meaning)

    return {
        "bone_age": CodedConcept("85151-9", "LN", "XR Bone age"),
        "age": CodedConcept("121033", "DCM", "Subject Age"),
        "procedure": CodedConcept("252956001", "SCT", "Greulich and Pyle bone age assessment"),
        "hand": CodedConcept("85562004", "SCT", "Hand"),
        "comment": CodedConcept("121106", "DCM", "Comment"),
        "months": CodedConcept("mo", "UCUM", "month"),
        "cm": CodedConcept("cm", "UCUM", "centimeter"),
        "height": CodedConcept("8302-2", "LN", "Body height"),
        "height_sds": own("HEIGHT-SDS", "Body height SDS (growth reference)"),
        "target": own("TARGET-HT", "Mid-parental target height"),
        "target_low": own("TARGET-HT-LOW", "Target height range, lower end"),
        "target_high": own("TARGET-HT-HIGH", "Target height range, upper end"),
        "adult": own("PRED-ADULT-HT", "Predicted adult height (Bayley-Pinneau)"),
        "adult_low": own("PRED-AHT-LOW90", "Predicted adult height (BP), 90% interval low"),
        "adult_high": own("PRED-AHT-HIGH90", "Predicted adult height (BP), 90% interval high"),
        "rwt": own("PRED-AHT-RWT", "Predicted stature at 18 (Roche-Wainer-Thissen)"),
        "rwt_low": own("PRED-AHT-RWT-LO", "Predicted stature at 18 (RWT), 90% interval low"),
        "rwt_high": own("PRED-AHT-RWT-HI", "Predicted stature at 18 (RWT), 90% interval high"),
        "weight": CodedConcept("29463-7", "LN", "Body weight"),
        "kg": CodedConcept("kg", "UCUM", "kilogram"),
        "no_units": CodedConcept("1", "UCUM", "no units"),
        "low": own("BA-LOW90", "Bone age, lower end of the 90% prediction interval"),
        "high": own("BA-HIGH90", "Bone age, upper end of the 90% prediction interval"),
        "difference": own("BA-DIFF", "Bone age minus chronological age"),
        "sds": own("BA-SDS", "Bone age SDS (Greulich & Pyle / Brush)"),
        "category": own("BA-CAT", "Bone age category"),
        "delayed": own("DELAYED", "Delayed (the 90% interval below -2 SD)"),
        "normal": CodedConcept("17621005", "SCT", "Normal"),
        "advanced": own("ADVANCED", "Advanced (the 90% interval above +2 SD)"),
        "indeterminate": own("INDETERMINATE", "Indeterminate (the 90% interval crosses a "
                             "2 SD line)"),
        "not assessed": own("NOTASSESSED", "Not assessed"),
    }


@dataclass
class DicomResults:
    """The two result instances for one film."""

    sr: Any  # pydicom Dataset (highdicom ComprehensiveSR)
    sc: Any  # pydicom Dataset (highdicom SCImage)

    def __iter__(self):
        return iter((self.sr, self.sc))


def check_uid_root(root: str) -> str:
    """A UID root is digits and dots, ends with a dot and leaves room for a 64-character UID."""
    parts = root.rstrip(".").split(".")
    if (not root.endswith(".") or len(root) > 40 or not all(
            p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts)):
        raise BoneAgeError(f"UID root {root!r}: digits and dots ending with a dot, at most 40 "
                           "characters (e.g. 1.2.826.0.1.3680043.8.498.)")
    return root


def derived_uid(root: str, *parts: str) -> str:
    """The same UID for the same parts: results are idempotent."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=root, entropy_srcs=[str(p) for p in parts]))


def source_header(data: bytes, name: str = "film") -> Any:
    """The film's header without its pixels (what the results copy and reference); the
    identifying UIDs a film lacks are made up from its bytes, so that its results still form
    one study of their own."""
    import hashlib

    import pydicom

    from boneage.data.dicom import _check_inflated_size, _quiet_pydicom

    _check_inflated_size(data, name)
    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
            ds.get("SOPInstanceUID")
        except Exception as e:
            raise BoneAgeError(f"{name}: unreadable DICOM header ({type(e).__name__})"
                               ) from None
    digest = hashlib.sha256(data).hexdigest()
    for key, default in (("SOPInstanceUID", None), ("StudyInstanceUID", None),
                         ("SeriesInstanceUID", None),
                         ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")):
        if not str(ds.get(key, "") or "").strip():
            setattr(ds, key, default or derived_uid(UID_ROOT, digest, key))
    if not str(ds.get("Modality", "") or "").strip():
        ds.Modality = "OT"
    for key in TYPE_2:  # present, empty where unknown, as the results' modules require
        if key not in ds:
            setattr(ds, key, "")
    return ds


_TEXT = {"PatientName": ("PN", 64), "ReferringPhysicianName": ("PN", 64),
         "PatientID": ("LO", 64), "AccessionNumber": ("SH", 16), "StudyID": ("SH", 16),
         "StudyDescription": ("LO", 64)}


def result_source(header: Any) -> Any:
    """What the results copy from a film, each value valid for its VR or left empty: films
    from real modalities carry ISO 2022 character sets, PatientSex `m`, dates like 2011-03-04
    or 20200230, names longer than 64 characters, CR/LF and NUL bytes, which the SR library
    refuses or which a validator flags in the results. Text is re-encoded as UTF-8; a date in
    the old dashed form is mended; anything else invalid is dropped, never guessed."""
    from pydicom.dataset import Dataset

    out = Dataset()
    for key in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(out, key, str(header.get(key, "") or ""))
    out.Modality = _code(header, "Modality", {"CR", "DX", "OT", "RG", "XC", "DR"}) or "OT"
    out.PatientSex = _code(header, "PatientSex", {"M", "F", "O"})
    for key in ("PatientBirthDate", "StudyDate"):
        setattr(out, key, _date(header.get(key)))
    out.StudyTime = _time(header.get("StudyTime"))
    for key, (vr, most) in _TEXT.items():
        if key in TYPE_2 or header.get(key):
            setattr(out, key, _text(header.get(key), vr, most))
    laterality = _code(header, "Laterality", {"R", "L"}) or _code(header, "ImageLaterality",
                                                                   {"R", "L"})
    if laterality:
        out.Laterality = laterality
    number = _number(header, "InstanceNumber", 0)
    if 0 < number < 2**31:
        out.InstanceNumber = number
    if any(not str(getattr(out, k, "")).isascii() for k in _TEXT):
        out.SpecificCharacterSet = "ISO_IR 192"
    return out


def _code(ds: Any, key: str, allowed: set[str]) -> str:
    value = str(ds.get(key, "") or "").strip().upper()
    return value if value in allowed else ""


def _date(value: Any) -> str:
    from boneage.data.dicom import _parse_date

    day = _parse_date(str(value or ""))
    return day.strftime("%Y%m%d") if day else ""


def _time(value: Any) -> str:
    text = str(value or "").strip()
    m = re.fullmatch(r"([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?", text)
    return text if m else ""


def _text(value: Any, vr: str, most: int) -> str:
    """A string value with no control characters, each PN group or the whole value cut to
    its VR's length."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value or "")).strip()
    text = text.replace("\\", " ")
    if vr == "PN":
        return "=".join(group[:most] for group in text.split("=")[:3])
    return text[:most]


def _number(ds: Any, key: str, default: int = 1) -> int:
    try:
        return int(ds.get(key, default) or default)
    except (TypeError, ValueError):
        return default


def structured_report(source: Any, result: Any | None, model_name: str, model_version: str,
                      reason: str | None = None, uid_root: str = UID_ROOT,
                      revision: str = "") -> Any:
    """The TID 1500 measurement report for one film (`result` a BoneAgeResult, or None with the
    reason for a film not assessed)."""
    import highdicom as hd
    from highdicom.sr import (
        AlgorithmIdentification,
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        FindingSite,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        ObserverContext,
        QualitativeEvaluation,
        SourceImageForMeasurement,
        TextContentItem,
        TrackingIdentifier,
    )
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.sr.codedict import codes

    c = _codes()
    sop = str(source.SOPInstanceUID)
    image = [SourceImageForMeasurement(str(source.SOPClassUID), sop)]
    algorithm = AlgorithmIdentification(name=f"boneage {model_name}"[:64],
                                        version=str(model_version)[:64])
    measurements = []

    def measure(key: str, value: float | None, unit: str = "months") -> None:
        if value is not None:
            measurements.append(Measurement(name=c[key], value=float(value), unit=c[unit],
                                            algorithm_id=algorithm, referenced_images=image))

    if result is not None:
        measure("bone_age", result.bone_age_months)
        measure("low", result.interval_low_months)
        measure("high", result.interval_high_months)
        measure("age", result.chronological_age_months)
        measure("difference", result.difference_months)
        measure("sds", result.sds, "no_units")
        measure("height", result.height_cm, "cm")
        measure("height_sds", result.height_sds, "no_units")
        measure("target", result.target_height_cm, "cm")
        measure("target_low", result.target_height_low_cm, "cm")
        measure("target_high", result.target_height_high_cm, "cm")
        measure("weight", result.weight_kg, "kg")
        measure("adult", result.predicted_adult_height_cm, "cm")
        measure("adult_low", result.predicted_adult_height_low_cm, "cm")
        measure("adult_high", result.predicted_adult_height_high_cm, "cm")
        measure("rwt", result.rwt_adult_height_cm, "cm")
        measure("rwt_low", result.rwt_adult_height_low_cm, "cm")
        measure("rwt_high", result.rwt_adult_height_high_cm, "cm")
    category = "not assessed" if result is None else result.category
    evaluations = ([QualitativeEvaluation(name=c["category"], value=c[category])]
                   if category else [])
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=derived_uid(uid_root, sop, "tracking"),
                                               identifier="bone age"),
        algorithm_id=algorithm, finding_sites=[FindingSite(c["hand"])],
        measurements=measurements or None, qualitative_evaluations=evaluations or None)
    comments = ([f"not assessed: {reason}"] if result is None else
                [f"sex used: {'male' if result.sex == 'M' else 'female'}"]
                + ([f"growth reference: {result.growth_reference}"]
                   if result.growth_reference else []) + list(result.notes)
                + list(result.warnings))
    for text in comments:
        group[0].ContentSequence.append(TextContentItem(
            name=c["comment"], value=text[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid(uid_root, "device", model_name, model_version), name="boneage",
            manufacturer_name=MANUFACTURER, model_name=f"{model_name} {model_version}"[:64]))
    report = MeasurementReport(observation_context=ObservationContext(
        observer_device_context=observer), procedure_reported=c["procedure"],
        imaging_measurements=[group])
    study = str(source.StudyInstanceUID)
    sr = ComprehensiveSR(
        evidence=[source], content=report[0],
        series_instance_uid=derived_uid(uid_root, study, "sr-series", model_version),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(uid_root, sop, "sr", model_version, revision),
        instance_number=_number(source, "InstanceNumber"), manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False,
        series_description="Bone age (boneage), structured",
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    scheme = Dataset()  # the private coding scheme, declared as PS3.3 C.12.1.1.3 asks
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "boneage result codes"
    scheme.CodingSchemeResponsibleOrganization = "the boneage project (docs/dicom.md)"
    sr.CodingSchemeIdentificationSequence = Sequence([scheme])
    return sr


def capture_image(source: Any, picture_rgb: np.ndarray, model_version: str,
                  uid_root: str = UID_ROOT, revision: str = "") -> Any:
    """The result picture as a Secondary Capture image in the film's study, referencing it."""
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    sop = str(source.SOPInstanceUID)
    study = str(source.StudyInstanceUID)
    sc = SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(picture_rgb, np.uint8),
        photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        patient_orientation=("L", "F"),
        series_instance_uid=derived_uid(uid_root, study, "sc-series", model_version),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid(uid_root, sop, "sc", model_version, revision),
        instance_number=_number(source, "InstanceNumber"), manufacturer=MANUFACTURER,
        transfer_syntax_uid="1.2.840.10008.1.2.1")
    sc.SeriesDescription = "Bone age (boneage), result image"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "bone age estimate, heatmap and results drawn over the film"
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = sop
    sc.SourceImageSequence = Sequence([ref])
    sc.BurnedInAnnotation = "YES"
    # the film's laterality where it has one (type 2C for a paired part such as a hand)
    sc.Laterality = str(source.get("Laterality", "") or "")
    return sc


def result_instances(model: Any, source: Any, result: Any | None, film_pixels: np.ndarray | None,
                     heatmap_bgr: np.ndarray | None, reason: str | None = None,
                     uid_root: str = UID_ROOT) -> DicomResults:
    """The SR and the SC for one film: `model` a BoneAgeModel, `source` the film's header."""
    from boneage.inference.report import result_picture

    version = str(model.card.get("version", "0"))
    picture = result_picture(model, result, film_pixels, heatmap_bgr, reason)
    # a film sent again with the same SOP Instance UID but a corrected header (the sex, the
    # dates) gets new result instances: a PACS keeps an instance it has, whatever comes later
    revision = "|".join(str(source.get(k, "") or "").strip() for k in (
        "PatientSex", "PatientBirthDate", "StudyDate", "PatientAge"))
    source = result_source(source)
    with warnings.catch_warnings():  # highdicom's advice on the film's own names, not ours
        warnings.simplefilter("ignore")
        return DicomResults(structured_report(source, result, model.name, version, reason,
                                              uid_root, revision),
                            capture_image(source, picture, version, uid_root, revision))


def encode(ds: Any) -> bytes:
    """A dataset as a DICOM file's bytes (preamble, file meta, explicit VR little endian)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def file_name(ds: Any) -> str:
    """SR_<uid>.dcm / SC_<uid>.dcm: one file per instance, whatever writes it again."""
    kind = "SR" if str(ds.SOPClassUID) == SR_CLASS else "SC"
    return f"{kind}_{ds.SOPInstanceUID}.dcm"


def not_assessed_reason(result: Any) -> str | None:
    """Why a result says nothing about bone age (a warning that voids it: not a radiograph,
    not a hand), else None."""
    from boneage.inference.quality import MEANINGLESS

    return next((w for w in result.warnings if MEANINGLESS in w), None)


@dataclass
class Assessment:
    """One DICOM film read and estimated as its header says (sex, age), or why not."""

    header: Any
    result: Any | None = None  # BoneAgeResult
    reason: str | None = None  # why not assessed
    pixels: np.ndarray | None = None
    heatmap: np.ndarray | None = None


def assess(model: Any, data: bytes, name: str, heatmap: bool = True) -> Assessment:
    """A received film, exactly as `boneage predict` reads a DICOM file: the sex from
    PatientSex, the age from the birth and study dates (or PatientAge). A film that cannot be
    read, has no usable sex or is not a hand radiograph is not an error: it is an Assessment
    with its reason. Raises BoneAgeError only when the header itself is unreadable."""
    return assess_many(model, [(data, name)], heatmap)[0]


def assess_many(model: Any, items: list[tuple[bytes, str]], heatmap: bool = True
                ) -> list[Assessment | BoneAgeError]:
    """`assess` for several films at once (the network runs on them together, as `predict`
    runs on chunks); a film whose header is unreadable is its BoneAgeError in the list."""
    from boneage.inference.api import read_film, resolve_sex

    out: list[Assessment | BoneAgeError] = []
    ready = []  # (index, film, prepared)
    for i, (data, name) in enumerate(items):
        try:
            out.append(Assessment(source_header(data, name)))
        except BoneAgeError as e:
            out.append(e)
            continue
        try:
            film = read_film(data, name=name)
            out[i].pixels = film.pixels
            resolve_sex(None, film)  # no usable sex: not assessed, before the network
            ready.append((i, film, model.prepare(film)))
        except BoneAgeError as e:
            out[i].reason = str(e).removeprefix(f"{name}: ")
    if ready:
        results = model.predict_films([f for _, f, _ in ready], [None] * len(ready),
                                      [None] * len(ready), [p for _, _, p in ready])
        for (i, film, prepared), result in zip(ready, results, strict=True):
            a = out[i]
            a.reason = not_assessed_reason(result)
            if a.reason is None:
                a.result = result
                if heatmap and model.explains:
                    a.heatmap = model.heatmap(film, film.male, prepared)
    return out


def assessment_files(model: Any, a: Assessment, uid_root: str = UID_ROOT) -> dict[str, bytes]:
    """The SR and SC of an assessment as {file name: DICOM file bytes}."""
    instances = result_instances(model, a.header, a.result, a.pixels, a.heatmap, a.reason,
                                 uid_root)
    return {file_name(ds): encode(ds) for ds in instances}


def estimate_files(model: Any, data: bytes, name: str, result: Any, pixels: np.ndarray,
                   heatmap: np.ndarray | None, uid_root: str = UID_ROOT) -> dict[str, bytes]:
    """An estimate already made for a DICOM film (by `predict` or the service) as its two
    result files; a result that a warning voids is written as not assessed, as the node
    writes it."""
    reason = not_assessed_reason(result)
    a = Assessment(source_header(data, name), None if reason else result, reason, pixels,
                   None if reason else heatmap)
    return assessment_files(model, a, uid_root)
