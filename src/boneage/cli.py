"""The `boneage` command. Each subcommand imports its stage lazily so `--help` stays instant."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from boneage.errors import BoneAgeError

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _add_data_args(p: argparse.ArgumentParser, labels_required: bool = False) -> None:
    """The same front door for every command that reads a data set."""
    p.add_argument("--images", metavar="DIR", help="folder of films (<id>.png/.jpg/.dcm)")
    p.add_argument("--labels", metavar="CSV", required=labels_required,
                   help="labels in any RSNA format (id,boneage,male / Image ID,... / Case ID,...)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="drop invalid rows (missing image, bad age or sex) instead of failing")


# ---------------------------------------------------------------------------------- prepare
def cmd_prepare(a: argparse.Namespace) -> int:
    from pathlib import Path

    from boneage.data.labels import LabelTable, load_table
    from boneage.data.summary import write_summary
    from boneage.preprocess.prepare import cpu_count, prepare
    from boneage.preprocess.steps import Pipeline, seed_pipeline, thumbnail_pipeline

    if a.example:
        from boneage.data.synthetic import write_example

        a.images = str(write_example(Path(a.out) / "example-films"))
        a.labels = str(Path(a.images) / "labels.csv")
    if a.pipeline:
        pipeline = Pipeline.load(a.pipeline)
    elif a.squash:
        pipeline = thumbnail_pipeline(a.size or 100)
    else:
        pipeline = seed_pipeline(a.size or 256, crop=not a.no_crop, clahe=not a.no_clahe,
                                 clip_limit=a.clip_limit, tile_grid=a.tiles)
    table = load_table(a.images, a.labels, skip_invalid=a.skip_invalid)
    for note in table.notes:
        print(note, file=sys.stderr)
    result = prepare(table, pipeline, a.out, workers=a.workers or cpu_count())
    for _, err in result.failed:
        print(f"error: {err}", file=sys.stderr)
    if a.labels:
        write_summary(table, a.out)
    if a.preview:
        from boneage.preprocess.preview import contact_sheet

        ok = [r for r in table if r.id not in {i for i, _ in result.failed}]
        if ok:
            n = contact_sheet(LabelTable(ok), pipeline, a.preview, count=a.preview_count)
            print(f"preview of {n} films -> {a.preview}")
    print(f"prepared {result.total - len(result.failed)}/{result.total} films "
          f"({result.done} new, {result.skipped} unchanged, {result.fallback} kept whole: no hand "
          f"found, {len(result.failed)} failed) in {result.seconds:.1f} s -> {a.out}")
    return 1 if result.failed else 0


def _parser_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="crop, enhance and resize films into a cache",
                       description="Run the preprocessing pipeline over a folder of films into a "
                       "cache (prepared PNGs + manifest.csv + pipeline.json + dataset summary). "
                       "Reruns only do what is missing or changed.")
    _add_data_args(p)
    p.add_argument("--out", metavar="CACHE", required=True, help="cache folder to write")
    p.add_argument("--size", type=_positive_int,
                   help="output size in pixels (256; 100 with --squash)")
    p.add_argument("--no-crop", action="store_true", help="keep the whole film (no hand crop)")
    p.add_argument("--no-clahe", action="store_true", help="skip CLAHE contrast enhancement")
    p.add_argument("--clip-limit", type=float, default=2.0, help="CLAHE clip limit (2.0)")
    p.add_argument("--tiles", type=_positive_int, default=8, help="CLAHE tile grid (8 = 8x8)")
    p.add_argument("--squash", action="store_true",
                   help="reproduce the shared 100 px data: whole film, nearest-neighbour squash")
    p.add_argument("--pipeline", metavar="JSON", help="an explicit pipeline file")
    p.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    p.add_argument("--preview", metavar="PNG", help="write a before/after contact sheet")
    p.add_argument("--preview-count", type=_positive_int, default=16, help="films in the preview")
    p.add_argument("--example", action="store_true",
                   help="generate a few synthetic films into CACHE/example-films and prepare them")
    p.set_defaults(func=cmd_prepare)


# ------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from boneage import __version__

    parser = argparse.ArgumentParser(
        prog="boneage",
        description="Skeletal (bone) age from a hand radiograph: prepare data, train, evaluate, "
        "compare models.",
    )
    parser.add_argument("--version", action="version", version=f"boneage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _parser_prepare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BoneAgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work was kept", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory (try a smaller --batch-size or --image-size)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
