"""Label tables: every RSNA CSV format (and a hospital's own) normalised to one table.

Formats read (column names matched case- and punctuation-insensitively):
- training:   id, boneage, male            (male True/False)
- validation: Image ID, male, Bone Age (months)
- test:       Case ID, Sex, Ground truth bone age (months)   (Sex M/F)
Sex may also be 0/1, M/F or male/female. Everything is validated before any work starts.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date as _date
from pathlib import Path

import numpy as np

from boneage.data.images import IMAGE_SUFFIXES, list_images, skipped_summary
from boneage.errors import BoneAgeError
from boneage.fileio import read_text

MAX_MONTHS = 240.0

ID_COLUMNS = ("id", "imageid", "caseid", "image", "file", "filename", "patientid")
SEX_COLUMNS = ("male", "sex", "gender", "ismale")
AGE_COLUMNS = (
    "boneage", "boneagemonths", "groundtruthboneagemonths", "boneageinmonths", "months", "age",
)
# the child's age on the day of the film (for `predict`'s comparison with the reference)
CHRONOLOGICAL_COLUMNS = ("chronologicalage", "chronologicalagemonths", "chronage",
                         "chronologicalageinmonths", "ageatstudy", "ageatstudymonths")
# heights in centimetres and the child's weight in kilograms (growth: docs/growth.md), read as
# given and checked by `predict`
HEIGHT_COLUMNS = {"height_cm": ("heightcm", "height", "childheightcm"),
                  "mother_cm": ("motherheightcm", "motherheight", "maternalheightcm"),
                  "father_cm": ("fatherheightcm", "fatherheight", "paternalheightcm"),
                  "weight_kg": ("weightkg", "weight", "childweightkg")}
# when the film was taken and when the child was born (YYYY-MM-DD): a follow-up series, and a
# chronological age from the two where no age column is given
DATE_COLUMNS = {"study_date": ("studydate", "visitdate", "date"),
                "birth_date": ("birthdate", "dateofbirth", "dob")}
# who the film belongs to, as the report prints it ("Patient or accession ID")
IDENTIFIER_COLUMNS = ("identifier", "accession", "accessionnumber", "patientoraccessionid")
_AGE_WORD = re.compile(r"(^|[^a-zA-Z])[aA][gG][eE]|[a-z]Age")  # age_months, PatientAge; not image
_MALE = {"true", "1", "m", "male", "yes", "1.0"}
_FEMALE = {"false", "0", "f", "female", "no", "0.0"}


def _norm(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def parse_sex(value: object) -> bool | None:
    """True for male, False for female, None when the value is not a recognised sex."""
    v = str(value).strip().lower()
    if v in _MALE:
        return True
    if v in _FEMALE:
        return False
    return None


@dataclass(frozen=True)
class Record:
    id: str
    path: Path | None
    male: bool | None
    months: float | None
    chronological_months: float | None = None
    identifier: str | None = None  # patient or accession ID, for the report
    heights: tuple[str | None, ...] = (None, None, None, None)  # child, mother, father (cm),
    # the child's weight (kg), as written (checked where they are used)
    study_date: str | None = None  # ISO
    birth_date: str | None = None  # ISO


@dataclass
class LabelTable:
    """One row per film: id (string), image path, sex, bone age in months (None if unknown)."""

    records: list[Record]
    source: str = ""
    dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def months(self) -> np.ndarray:
        return np.array([np.nan if r.months is None else r.months for r in self.records], float)

    @property
    def male(self) -> np.ndarray:
        return np.array([bool(r.male) for r in self.records], bool)

    @property
    def labelled(self) -> bool:
        return bool(self.records) and all(r.months is not None for r in self.records)

    def subset(self, ids: Iterable[str]) -> LabelTable:
        keep = set(ids)
        return replace(self, records=[r for r in self.records if r.id in keep], notes=[])


def _find_column(header: Sequence[str], candidates: Sequence[str]) -> str | None:
    by_norm = {_norm(h): h for h in header}
    for c in candidates:
        if c in by_norm:
            return by_norm[c]
    return None


def default_images_dir(csv_path: Path) -> Path:
    """The Kaggle layout (`x.csv` beside `x/`, sometimes `x/x/`), else the CSV's folder."""
    d = csv_path.with_suffix("")
    if d.is_dir():
        nested = d / d.name
        return nested if nested.is_dir() else d
    return csv_path.parent


def index_images(folder: Path) -> dict[str, Path]:
    """Map each image's stem (and full name) to its path, for matching ids to files."""
    index: dict[str, Path] = {}
    for p in list_images(folder):
        index.setdefault(p.stem, p)
        index[p.name] = p
    return index


def _summarise(rows: list[tuple[int, str]], limit: int = 3) -> str:
    shown = ", ".join(f"row {n}: {v!r}" for n, v in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{len(rows)} row(s) ({shown}{more})"


def read_labels(
    csv_path: str | Path,
    images_dir: str | Path | None = None,
    *,
    skip_invalid: bool = False,
    require_age: bool = True,
    require_images: bool = True,
) -> LabelTable:
    """Read and validate a label CSV; raise BoneAgeError naming the file, column and rows.

    With skip_invalid the offending rows are dropped instead (counted in `dropped`).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise BoneAgeError(f"{csv_path}: no such labels file")
    text = read_text(csv_path, "labels CSV file")
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    name = csv_path.name
    id_col = _find_column(header, ID_COLUMNS)
    sex_col = _find_column(header, SEX_COLUMNS)
    age_col = _find_column(header, AGE_COLUMNS)
    chron_col = _find_column(header, CHRONOLOGICAL_COLUMNS)
    ident_col = _find_column(header, IDENTIFIER_COLUMNS)
    height_cols = [_find_column(header, names) for names in HEIGHT_COLUMNS.values()]
    study_col, birth_col = (_find_column(header, names) for names in DATE_COLUMNS.values())
    missing = [
        kind for kind, col, needed in (
            ("id (id / Image ID / Case ID)", id_col, True),
            ("sex (male / Sex)", sex_col, True),
            ("bone age (boneage / Bone Age (months))", age_col, require_age),
        ) if needed and col is None
    ]
    if missing:
        raise BoneAgeError(
            f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}"
        )
    used = (id_col, sex_col, age_col, chron_col, ident_col, *height_cols, study_col, birth_col)
    unread = [h for h in header if h not in used and _AGE_WORD.search(h)]
    # an age column under another name (a clinic's `age_months`) is said, not silently dropped
    if not require_age and age_col is not None and _norm(age_col) in ("age", "months"):
        unread.append(age_col)  # for predict a bare "age" is more likely the child's own
    notes = [f"{name}: column(s) {', '.join(map(repr, unread))} not read; name a bone age "
             "'boneage', the child's age 'chronological_age_months'"] if unread else []
    if images_dir is None:
        images_dir = default_images_dir(csv_path)
    images_dir = Path(images_dir)
    index = index_images(images_dir) if require_images else {}

    problems: dict[str, list[tuple[int, str]]] = {}
    bad_rows: set[int] = set()
    records: list[tuple[int, Record]] = []
    seen: Counter[str] = Counter()

    def flag(kind: str, rown: int, value: str) -> None:
        problems.setdefault(kind, []).append((rown, value))
        bad_rows.add(rown)

    for rown, row in enumerate(reader, start=2):  # row 1 is the header
        rid = str(row.get(id_col) or "").strip()
        if not rid:
            flag(f"column {id_col!r}: empty id", rown, rid)
            continue
        seen[rid] += 1
        if seen[rid] > 1:
            flag(f"column {id_col!r}: duplicate id", rown, rid)
        raw_sex = str(row.get(sex_col) or "").strip()
        male = parse_sex(raw_sex)
        if male is None:
            flag(f"column {sex_col!r}: unknown sex (expected M/F, male/female, True/False, 1/0)",
                 rown, raw_sex)
        months = chron = None
        for col, needed, kind in ((age_col, require_age, "bone"), (chron_col, False, "chron")):
            raw_age = str(row.get(col) or "").strip() if col is not None else ""
            if col is None or not (raw_age or needed):
                continue
            try:
                value = float(raw_age)
                if not math.isfinite(value):
                    raise ValueError
            except ValueError:
                flag(f"column {col!r}: not a number", rown, raw_age)
                continue
            if not 0 <= value <= MAX_MONTHS:
                flag(f"column {col!r}: outside 0-{MAX_MONTHS:.0f} months", rown, raw_age)
            if kind == "bone":
                months = value
            else:
                chron = value
        path = None
        if require_images:
            path = index.get(rid) or index.get(Path(rid).name)
            if path is None:
                flag(f"missing image in {images_dir} (looked for {rid}"
                     f"{{{','.join(IMAGE_SUFFIXES)}}})", rown, rid)
        ident = str(row.get(ident_col) or "").strip()[:64] if ident_col else ""
        heights = tuple((str(row.get(c) or "").strip() or None) if c else None
                        for c in height_cols)
        dates = []
        for col in (study_col, birth_col):
            raw = str(row.get(col) or "").strip() if col else ""
            try:
                dates.append(_date.fromisoformat(raw).isoformat() if raw else None)
            except ValueError:
                flag(f"column {col!r}: not a date (YYYY-MM-DD)", rown, raw)
                dates.append(None)
        if dates[0] and dates[1] and dates[0] < dates[1]:
            flag("the study date is before the birth date", rown, f"{dates[0]} < {dates[1]}")
        elif dates[0] and dates[1] and chron is None:
            chron = (_date.fromisoformat(dates[0]) - _date.fromisoformat(dates[1])).days / (
                365.25 / 12)
            if chron > MAX_MONTHS:
                flag(f"the dates give an age over {MAX_MONTHS:.0f} months", rown, dates[1])
        records.append((rown, Record(rid, path, male, months, chron, ident or None, heights,
                                     dates[0], dates[1])))

    if not records and not problems:
        raise BoneAgeError(f"{name}: no rows")
    if problems and not skip_invalid:
        details = "; ".join(f"{kind}: {_summarise(rows)}" for kind, rows in problems.items())
        raise BoneAgeError(f"{name}: {details} (use --skip-invalid to drop them)")
    kept = [r for n, r in records if n not in bad_rows]
    dropped = len(bad_rows)
    if not kept:
        raise BoneAgeError(f"{name}: every row is invalid, nothing left")
    notes += [f"{name}: dropped {dropped} invalid row(s)"] if dropped else []
    return LabelTable(kept, source=str(csv_path), dropped=dropped, notes=notes)


def table_from_folder(images_dir: str | Path) -> LabelTable:
    """An unlabelled table of every image in a folder (for prepare / predict without labels)."""
    skipped: dict[str, list[str]] = {}
    paths = list_images(images_dir, skipped)
    if not paths:
        raise BoneAgeError(f"{images_dir}: no PNG, JPEG or DICOM images found")
    note = skipped_summary(images_dir, skipped)
    stems = Counter(p.stem for p in paths)
    records = [Record(p.stem if stems[p.stem] == 1 else p.name, p, None, None) for p in paths]
    return LabelTable(records, source=str(images_dir), notes=[note] if note else [])


def load_table(
    images: str | Path | None,
    labels: str | Path | None,
    *,
    skip_invalid: bool = False,
    require_age: bool = True,
) -> LabelTable:
    """The CLI's front door: `--images DIR --labels CSV` (either may be omitted sensibly)."""
    if labels is None:
        if images is None:
            raise BoneAgeError("give --images DIR and/or --labels CSV")
        return table_from_folder(images)
    return read_labels(labels, images, skip_invalid=skip_invalid, require_age=require_age)
