"""Mutation score of the core modules with a real mutation tool (mutmut 3): every operator,
constant and comparison of a module changed one at a time, the unit tests that cover it run,
and the share of mutants they kill.

    pip install mutmut   # not a test dependency: a benchmark's tool
    python benchmarks/mutation_score.py [--only data/splits.py ...] [--workers 2]

Each module is mutated alone in a scratch copy of the tree (`git ls-files`; mutmut 3 mutates a
copy under mutants/, and the whole package is copied so that it imports), against the unit
tests listed for it in MODULES (mutmut runs, for each mutant, only those of them that reach the
mutated function). Mutants that change no behaviour (EQUIVALENT below, each with why) are
left out of the score. Writes benchmarks/results/mutation_score.json and prints a table:
killed, survived, no test reached it, timeout, score = killed / (all - equivalent).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
U = "tests/unit/"
# module (under src/boneage/) -> the unit tests that cover it
MODULES: dict[str, list[str]] = {
    "evaluation/metrics.py": [U + "test_independent.py", U + "test_contracts.py"],
    "inference/uncertainty.py": [U + "test_independent.py", U + "test_uncertainty.py"],
    "inference/correction.py": [U + "test_independent.py", U + "test_uncertainty.py"],
    "clinical/reference.py": [U + "test_reference.py"],
    "data/splits.py": [U + "test_independent.py", U + "test_splits.py"],
    "data/labels.py": [U + "test_independent.py", U + "test_labels.py", U + "test_splits.py"],
    # (the rest of test_model_contract.py loads the bundled model: seconds per mutant)
    "models/contract.py": [U + "test_independent.py",
                           U + "test_model_contract.py::test_inputs_are_checked_against_the_card",
                           U + "test_model_contract.py::test_a_damaged_card_is_one_line_naming_"
                               "its_key"],
    # issue #44's modules (tests that start the node as a process exercise the installed
    # package, not the mutant: only the in-process tests count for the node's modules)
    "clinical/followup.py": [U + "test_followup.py"],
    "clinical/growth.py": [U + "test_growth.py", U + "test_adult_height.py"],
    "preprocess/render.py": [U + "test_render.py"],
    "dicomnode/spool.py": [U + "test_dicom_node_hostile.py", U + "test_dicom_node.py::"
                           "test_the_spool_releases_results_only_for_films_that_left_incoming"],
    "dicomnode/node.py": [U + "test_dicom_node_hostile.py"],
    "dicomnode/guard.py": [U + "test_dicom_node_hostile.py"],
    "inference/dicom_results.py": [U + "test_dicom_node_hostile.py", U + "test_dicom_node.py"],
}
# Mutants that change no behaviour, recognised by what they write (a regular expression on the
# mutated line, "+ ..."): (module, pattern, why). Each was read and judged by hand.
_FLOAT = (r"np\.asarray\((y|p|mean|spread|preds|single|months|pred|a), ?(None)?\)",
          "np.asarray(x, float) -> np.asarray(x): for the numbers these functions are given "
          "(floats or ints), numpy promotes every computation to float64 all the same")
EQUIVALENT: list[tuple[str, str, str]] = [
    ("evaluation/metrics.py", *_FLOAT),
    ("evaluation/metrics.py", r'float\("NAN"\)', 'float("NAN") is float("nan")'),
    ("inference/uncertainty.py", *_FLOAT),
    ("inference/correction.py", r"np\.asarray\((y|pred), ?(None)?\)", _FLOAT[1]),
    ("inference/correction.py", r"np\.where\(male,.*\)|male = np\.asarray\(male, ?(None)?\)",
     "apply_correction: np.where reads 0/1 and booleans alike"),
    ("data/splits.py", r"np\.asarray\(months, ?(None)?\)", _FLOAT[1]),
    ("data/splits.py", r'path\.name \+ "(XX\.tmpXX|\.TMP)"',
     "the temporary file's name: it is renamed over the split file at once"),
    ("data/splits.py", r'newline=(None|\))|open\(tmp, "w", \)',
     "csv writes its own \\r\\n; on POSIX newline=None translates nothing"),
    ("data/splits.py", r"if n > len\(table\)",
     "n == len(table): the quota path takes every film of every stratum, in table order"),
    ("data/splits.py", r"strict=(None|False)|take, \)",
     "zip over groups and their quotas: equally long by construction"),
    ("data/splits.py", r"ids = np\.array\(table\.ids, (dtype=None)?\)",
     "a numpy string array instead of objects: the same ids, compared the same"),
    ("data/splits.py", r"male\.astype\(None\) \* 10|male\.astype\(int\) \* 11",
     "the strata keep their members and their order (booleans x 10 are the same integers; "
     "x 11 numbers them 11-15 instead of 10-14)"),
    ("data/splits.py", r"val_fraction <= 1|val_fraction < 2|test_fraction <= 1|"
                       r"test_fraction < 2",
     "a fraction of 1 or more is refused all the same by the bound on their sum (< 1)"),
    ("evaluation/metrics.py", r"rng\.integers\(err\.size, size=",
     "rng.integers(n, size=...) draws from [0, n) as rng.integers(0, n, size=...) does"),
    ("inference/uncertainty.py", r"flags=None|borderMode=None|borderValue=None|"
                                 r"BORDER_CONSTANT, \)|^\+\s+borderValue=0\)$|"
                                 r"warpAffine\(image, m, None,",
     "OpenCV's defaults for warpAffine are these: linear interpolation, a constant border of "
     "0, the source's size"),
    ("clinical/reference.py", r"np\.array\(reference\(\)\[.*\], ?(None)?\)",
     "the table's rows mix integers and decimals: numpy makes them float64 either way"),
    ("models/contract.py", r'emb\.get\("p90", 1\)',
     "a missing p90 passes the check whether it stands in as 0 or 1"),
]


def equivalent_to(module: str, change: str) -> str | None:
    """Why a mutant is equivalent, or None."""
    added = "\n".join(ln for ln in change.splitlines() if ln.startswith("+"))
    for mod, pattern, why in EQUIVALENT:
        if mod == module and re.search(pattern, added, re.M):
            return why
    return None


def scratch_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def configure(tree: Path, module: str, tests: list[str], workers: int) -> None:
    """[tool.mutmut]: the whole package copied, only `module` mutated."""
    others = sorted(str(p.relative_to(tree)) for p in (tree / "src/boneage").rglob("*.py")
                    if str(p.relative_to(tree / "src/boneage")) != module)
    cfg = tree / "pyproject.toml"
    text = cfg.read_text()
    text = text.split("[tool.mutmut]")[0]
    text += ("\n[tool.mutmut]\npaths_to_mutate = [\"src/boneage/\"]\n"
             f"do_not_mutate = {json.dumps(others)}\n"
             f"tests_dir = {json.dumps(tests)}\nmax_children = {workers}\n"
             # the recorded split, which a test reproduces from the labels
             "also_copy = [\"benchmarks/results\"]\n")
    cfg.write_text(text)


def statuses(tree: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         cwd=tree, capture_output=True, text=True).stdout
    return dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", out, re.M))


def diff(tree: Path, mutant: str) -> str:
    """The mutant's change, as the lines mutmut removed (-) and added (+)."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=tree,
                         capture_output=True, text=True).stdout
    return "\n".join(ln for ln in out.splitlines()
                     if ln[:1] in "+-" and not ln.startswith(("+++", "---")))


def run_module(module: str, tests: list[str], workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        scratch_copy(tree)
        configure(tree, module, tests, workers)
        t0 = time.perf_counter()
        data = ROOT.parent / "shared" / "data"  # tests that need the real data find it
        env = {**os.environ, **({"BONEAGE_DATA": str(data)} if data.is_dir() else {})}
        subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=tree, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        st = statuses(tree)
        diffs = {m: diff(tree, m) for m, s in st.items() if s in ("survived", "no tests")}
    equivalent = {m: why for m in st if m in diffs and (why := equivalent_to(module, diffs[m]))}
    counted = {m: s for m, s in st.items() if m not in equivalent}
    killed = sum(s == "killed" for s in counted.values())
    survived = sorted(m for m, s in counted.items() if s == "survived")
    untested = sorted(m for m, s in counted.items() if s == "no tests")
    timeout = sum(s == "timeout" for s in counted.values())
    return {"mutants": len(st), "equivalent": len(equivalent), "killed": killed + timeout,
            "survived": len(survived), "no_tests": len(untested),
            "score": round((killed + timeout) / max(len(counted), 1), 3),
            "equivalent_mutants": {m: {"change": diffs[m], "why": w}
                                   for m, w in sorted(equivalent.items())},
            "seconds": round(seconds, 1), "tests": tests,
            "survivors": {m: diffs.get(m, "") for m in survived},
            "not_reached": {m: diffs.get(m, "") for m in untested}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(MODULES), help="these modules only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/mutation_score.json"))
    a = ap.parse_args()
    try:
        import mutmut  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs mutmut: pip install mutmut") from None
    out = Path(a.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for module in a.only or MODULES:
        results[module] = run_module(module, MODULES[module], a.workers)
        r = results[module]
        print(f"{module:28} {r['mutants']:4} mutants  killed {r['killed']:4}  survived "
              f"{r['survived']:3}  no test {r['no_tests']:3}  equivalent {r['equivalent']:3}  "
              f"score {r['score']:.1%}  ({r['seconds']:.0f} s)", flush=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
