"""`boneage predict`: films and folders in, one result per film streamed out as it is made
(table, CSV or JSON Lines), so an interrupted batch keeps what it finished. Reading and
preprocessing run in worker processes; the model runs on batches in this one."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from boneage.clinical.followup import visit_of
from boneage.clinical.growth import Heights
from boneage.data.images import list_images, skipped_summary
from boneage.data.labels import read_labels
from boneage.errors import BoneAgeError
from boneage.inference.api import (
    RESULT_COLUMNS,
    BoneAgeModel,
    BoneAgeResult,
    given_sex,
    read_film,
    without_pixels,
)
from boneage.preprocess.steps import Pipeline

CHUNK = 16


def expand(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given, folders as their images; (files, errors for paths that do not exist)."""
    files, errors = [], []
    for p in map(Path, paths):
        if p.is_dir():
            skipped: dict[str, list[str]] = {}
            found = list_images(p, skipped)
            note = skipped_summary(p, skipped)
            if note:
                print(f"note: {note}", file=sys.stderr)
            if not found:
                errors.append(f"{p}: no PNG, JPEG or DICOM images in this folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return files, errors


@dataclass(frozen=True)
class Child:
    """What a labels row says of a film's child, beside the film itself."""

    male: bool
    age_months: float | None = None  # chronological
    identifier: str | None = None  # patient or accession ID
    heights: Heights | None = None
    study_date: str | None = None  # ISO


def from_labels(labels: str | None, skip_invalid: bool = False) -> dict[str, Child]:
    """id -> Child from a labels CSV (any RSNA format, plus optional `chronological_age_months`,
    `identifier`, `height_cm`, `mother_height_cm` and `father_height_cm` columns). A height
    that cannot be one stops here, before any output, with its rows named."""
    if labels is None:
        return {}
    table = read_labels(labels, require_age=False, require_images=False,
                        skip_invalid=skip_invalid)
    for note in table.notes:
        print(f"note: {note}", file=sys.stderr)
    out, bad = {}, []
    for r in table:
        try:
            heights = Heights.checked(*r.heights)
        except BoneAgeError as e:
            bad.append(f"{r.id}: {e}")
            continue
        out[r.id] = Child(bool(r.male), r.chronological_months, r.identifier, heights,
                          r.study_date)
    if bad:
        raise BoneAgeError(f"{Path(labels).name}: " + "; ".join(bad[:3])
                           + (f"; and {len(bad) - 3} more" if len(bad) > 3 else ""))
    return out


def _read_prepare(task: tuple[int, str, Pipeline, bool]) -> tuple[int, Any, str]:
    """In a worker: read and prepare one film, once. Its pixels travel back only when the
    heatmap or report needs them (the film is not read a second time)."""
    from boneage.inference.api import prepare_film

    i, path, pipeline, keep_pixels = task
    try:
        film = read_film(path)
        prepared = prepare_film(film, pipeline)
        return i, (film if keep_pixels else without_pixels(film), prepared), ""
    except BoneAgeError as e:
        return i, None, str(e)
    except Exception as e:  # a decoder's own error on one file must not stop the batch
        return i, None, f"{path}: {type(e).__name__}: {e}"


class Writer:
    def __init__(self, fmt: str, stream: IO[str]) -> None:
        self.fmt, self.stream = fmt, stream
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(RESULT_COLUMNS)
        elif fmt == "table":
            stream.write(f"{'file':<28} {'sex':<3} {'bone age':>18} {'90% interval':>14} "
                         f"{'chron.':>7} {'diff':>6} {'SDS':>6} {'category':<13} warnings\n")
        stream.flush()

    def write(self, r: BoneAgeResult) -> None:
        d = r.to_dict()
        if self.fmt == "json":
            self.stream.write(json.dumps(d) + "\n")
        elif self.csv:
            self.csv.writerow(["; ".join(v) if k in ("warnings", "notes")
                               else ("" if v is None else v) for k, v in d.items()])
        else:
            def f(v, fmt="{:.1f}"):
                return "" if v is None else fmt.format(v)
            iv = (f"{r.interval_low_months:.0f}-{r.interval_high_months:.0f}"
                  if r.interval_low_months is not None else "")
            name = Path(r.file).name
            if not name.isprintable():  # a newline or tab in a name must not break the table
                name = repr(name)[1:-1]
            self.stream.write(
                f"{name[:28]:<28} {r.sex:<3} "
                f"{f(r.bone_age_months) + ' mo (' + f(r.bone_age_years) + ' y)':>18} "
                f"{iv:>14} {f(r.chronological_age_months):>7} {f(r.difference_months):>6} "
                f"{f(r.sds, '{:.2f}'):>6} {r.category or '':<13} {'; '.join(r.warnings)}\n")
            for line in growth_lines(r) + r.notes:  # under the film's row, indented
                self.stream.write(f"{'':<4}{line}\n")
        self.stream.flush()


def growth_lines(r: BoneAgeResult) -> list[str]:
    """The growth figures of a result in one line each (the table output's second lines),
    worded as the PDF report's rows."""
    from boneage.inference.report import growth_rows

    return [f"{label[0].lower()}{label[1:]} {value}" for label, value in growth_rows(r)]


@dataclass
class BatchOptions:
    """What `boneage predict` was asked for, beside the model and the paths."""

    sex: str | None = None  # for every film
    labels: str | None = None  # per-film sex and chronological age (any RSNA format)
    chronological_age: float | None = None  # months, for every film
    fmt: str = "table"  # table | csv | json
    out: str | None = None  # a file instead of stdout (written whole or not at all)
    heatmap_dir: str | None = None
    report_dir: str | None = None
    dicom_dir: str | None = None  # the SR and SC of each DICOM film (docs/dicom.md)
    identifier: str | None = None  # patient or accession ID, for one film's report
    heights: Heights | None = None  # for every film (one child), cm
    growth_reference: str = "uk-who"
    followup: str | None = None  # the follow-up table (.csv or .json) of children's series
    uid_root: str | None = None  # for those results' UIDs
    workers: int = 1
    progress: bool = True
    skip_invalid: bool = False  # labels rows


def labelled(by_id: dict[str, Child], path: Path) -> Child | None:
    """The labels' row for a film, by its stem or its file name."""
    return by_id.get(path.stem, by_id.get(path.name))


def child_facts(path: Path, film: Any, by_id: dict[str, Child],
                opts: BatchOptions) -> tuple[Any, float | None]:
    """(sex, chronological age) for one film: the flag, else the labels' row, else the DICOM
    header (one film, one child). Raises BoneAgeError when no sex is known."""
    known = labelled(by_id, path)
    sex = opts.sex if opts.sex else (known.male if known else None)
    age = opts.chronological_age if opts.chronological_age is not None else (
        known.age_months if known else None)
    if sex is None and film.male is None:
        raise BoneAgeError(f"{path}: sex is required (the bone-age standards differ by sex); "
                           "give --sex, --labels, or a DICOM with PatientSex")
    return sex, age


@contextmanager
def output_stream(out: str | None) -> Iterator[IO[str]]:
    """stdout, or --out written to a temporary file beside it and renamed into place at the end
    (also when interrupted, with the rows finished so far): concurrent or stopped runs never
    leave a file of interleaved or half-written rows."""
    if not out:
        yield sys.stdout
        return
    import tempfile

    from boneage.fileio import ensure_writable_dir, publish

    if Path(out).is_dir():
        raise BoneAgeError(f"{out}: a folder; --out takes a file name (results.csv)")
    ensure_writable_dir(Path(out).parent)  # a new folder is made for it
    try:
        fd, tmp = tempfile.mkstemp(dir=Path(out).parent, prefix=f".{Path(out).name}.",
                                   suffix=".tmp")
        stream = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
    except OSError as e:
        raise BoneAgeError(f"{out}: cannot write ({e.strerror or e})") from None
    try:
        yield stream
    finally:
        stream.close()
        publish(tmp, out)


def predict_paths(model: BoneAgeModel, paths: list[str], opts: BatchOptions | None = None
                  ) -> tuple[int, list[str]]:
    """Return (films estimated, one error line per failure)."""
    from tqdm import tqdm

    from boneage.fileio import ensure_writable_dir
    from boneage.inference.api import check_age
    from boneage.preprocess.prepare import parallel_map

    opts = opts or BatchOptions()
    opts.chronological_age = check_age(opts.chronological_age)
    given_sex(opts.sex)  # an unknown --sex stops before the table's header is written
    by_id = from_labels(opts.labels, opts.skip_invalid)  # a bad labels file stops first
    files, errors = expand(paths)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if opts.identifier and len(files) > 1:
        raise BoneAgeError(f"--identifier names one film's patient or accession ID; {len(files)} "
                           "films were given (use an identifier column in --labels)")
    if opts.sex is None and not by_id and files and not any(map(_is_dicom, files)):
        raise BoneAgeError(f"sex is required (the bone-age standards differ by sex) and none of "
                           f"the {len(files)} film(s) is a DICOM with PatientSex: give --sex "
                           "M|F, or --labels with a sex per film")
    for folder in (opts.heatmap_dir, opts.report_dir, opts.dicom_dir):
        if folder:
            ensure_writable_dir(folder)
    if opts.followup:
        if Path(opts.followup).suffix.lower() not in (".csv", ".json"):
            raise BoneAgeError(f"--followup {opts.followup}: a .csv or .json file name")
        ensure_writable_dir(Path(opts.followup).parent)
    extras = bool(opts.heatmap_dir or opts.report_dir or opts.dicom_dir)
    stems = output_stems(files)
    tasks = [(i, str(p), model.predictor.pipeline, extras) for i, p in enumerate(files)]
    pending: list[tuple[int, Any, Any, float | None]] = []  # (index, (film, prepared), sex, age)
    visits: list = []  # (identifier, study date) known: a child's series

    def heights_of(i: int) -> Heights | None:
        known = labelled(by_id, files[i])
        return opts.heights or (known.heights if known else None)
    done = 0

    def flush(writer: Writer) -> None:
        nonlocal done
        if not pending:
            return
        results = model.predict_films([item[0] for _, item, _, _ in pending],
                                      [s for _, _, s, _ in pending],
                                      [age for _, _, _, age in pending],
                                      [item[1] for _, item, _, _ in pending],
                                      heights=[heights_of(i) for i, _, _, _ in pending],
                                      growth_reference=opts.growth_reference)
        for (i, (film, prepared), s, _), r in zip(pending, results, strict=True):
            writer.write(r)
            done += 1
            known = labelled(by_id, files[i])
            ident = known.identifier if known else None
            child, when = ident or film.patient_id, (known and known.study_date) or film.study_date
            if child and when:
                visits.append(visit_of(r, child, when))
            if extras:
                _write_extras(model, files[i], stems[i], film, prepared, s, r, opts,
                              opts.identifier or ident)
        pending.clear()

    with output_stream(opts.out) as stream:
        writer = Writer(opts.fmt, stream)
        bar = tqdm(total=len(files), desc="predict", unit="film", dynamic_ncols=True,
                   disable=not opts.progress or len(files) < 2 or None, file=sys.stderr)
        # one pool for the whole batch, results in file order; the model runs per CHUNK films
        for i, item, err in parallel_map(_read_prepare, tasks, opts.workers, ordered=True):
            bar.update(1)
            try:
                if err:
                    raise BoneAgeError(err)
                sex, age = child_facts(files[i], item[0], by_id, opts)
            except BoneAgeError as e:
                errors.append(str(e))
                print(f"error: {e}", file=sys.stderr)
                continue
            pending.append((i, item, sex, age))
            if len(pending) >= CHUNK:
                flush(writer)
        flush(writer)
        bar.close()
    _write_followup(model, visits, opts, errors)
    return done, errors


def _write_followup(model: BoneAgeModel, visits: list, opts: BatchOptions,
                    errors: list[str]) -> None:
    """The children with several visits: their series as a table (--followup) and a one-page
    PDF each (with --report); each file whole or not at all."""
    from boneage.clinical.followup import FOLLOWUP_COLUMNS, build_series
    from boneage.fileio import atomic_write_bytes, atomic_write_csv, atomic_write_json

    try:
        series = build_series(visits)
    except BoneAgeError as e:
        errors.append(str(e))
        print(f"error: {e}", file=sys.stderr)
        return
    if not series:
        if opts.followup:
            print("note: no child has two or more visits (an identifier and a study date per "
                  "film): no follow-up table", file=sys.stderr)
        return
    rows = [row for s in series for row in s.rows()]
    if not opts.followup and opts.out:  # beside the per-film table, in its format
        out = Path(opts.out)
        opts.followup = str(out.with_name(f"{out.stem}.followup"
                                          f"{'.json' if opts.fmt == 'json' else '.csv'}"))
        print(f"note: {len(series)} child(ren) with several visits: their series in "
              f"{opts.followup}", file=sys.stderr)
    if opts.followup:
        if Path(opts.followup).suffix.lower() == ".json":
            atomic_write_json(opts.followup, [{"identifier": s.identifier,
                                               "visits": s.rows()} for s in series])
        else:
            atomic_write_csv(opts.followup, FOLLOWUP_COLUMNS,
                             [[row[c] for c in FOLLOWUP_COLUMNS] for row in rows])
    else:
        print(f"note: {len(series)} child(ren) with several visits: --followup FILE writes "
              "their series", file=sys.stderr)
    if opts.report_dir:
        from boneage.inference.report import followup_report, report_filename

        for s in series:
            name = report_filename(s.identifier).replace(".pdf", ".followup.pdf")
            atomic_write_bytes(Path(opts.report_dir) / name,
                               followup_report(model, s, opts.growth_reference))


def output_stems(files: list[Path]) -> list[str]:
    """A name per film for its heatmap and report: the file's stem, or where films share one
    (a/1.png and b/1.png) the stem after its folder's name (a_1, b_1): no film's output
    overwrites another's."""
    from collections import Counter

    counts = Counter(p.stem for p in files)
    used: set[str] = set()
    stems = []
    for p in files:
        base = p.stem if counts[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        name, k = base, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        stems.append(name)
    return stems


def _is_dicom(path: Path) -> bool:
    """Whether a file is a DICOM by its content, not by its name."""
    from boneage.data.images import sniff_format

    try:
        with open(path, "rb") as f:
            return sniff_format(f.read(132)) == "dicom"
    except OSError:
        return False


def _write_extras(model: BoneAgeModel, path: Path, stem: str, film: Any, prepared: Any,
                  sex: Any, result: BoneAgeResult, opts: BatchOptions,
                  identifier: str | None = None) -> None:
    """The heatmap PNG and/or the one-page PDF report for one film, from the film and the
    preparation already made for its estimate."""
    import cv2

    from boneage.fileio import atomic_write_bytes

    male = sex if sex is not None else film.male
    pic = model.heatmap(film, male, prepared) if model.explains else None
    if opts.heatmap_dir and pic is not None:
        ok, buf = cv2.imencode(".png", pic)
        if ok:
            atomic_write_bytes(Path(opts.heatmap_dir) / f"{stem}.heatmap.png",
                               np.asarray(buf).tobytes())
    if opts.report_dir:
        from boneage.inference.report import pdf_report

        atomic_write_bytes(Path(opts.report_dir) / f"{stem}.report.pdf",
                           pdf_report(model, result, film.pixels, pic, identifier=identifier,
                                      study_date=film.study_date, file_name=path.name))
    if opts.dicom_dir:
        _write_dicom_results(model, path, film, result, pic, opts)


def _write_dicom_results(model: BoneAgeModel, path: Path, film: Any, result: BoneAgeResult,
                         pic: np.ndarray | None, opts: BatchOptions) -> None:
    """The film's SR and SC into --dicom-out (a DICOM film's only: they belong to its study)."""
    from boneage.data.images import read_bytes, sniff_format
    from boneage.fileio import atomic_write_bytes
    from boneage.inference.dicom_results import UID_ROOT, estimate_files

    data = read_bytes(path)
    if sniff_format(data) != "dicom":
        print(f"note: {path}: not a DICOM film: no DICOM results (they go into the film's own "
              "study)", file=sys.stderr)
        return
    for name, encoded in estimate_files(model, data, str(path), result, film.pixels, pic,
                                        opts.uid_root or UID_ROOT).items():
        atomic_write_bytes(Path(opts.dicom_dir) / name, encoded)
