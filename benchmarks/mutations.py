"""A small mutation check: put realistic bugs into the code one at a time and see whether the
tests catch each (kill rate). The bugs are the ones that once passed the whole suite.

    python benchmarks/mutations.py [--tests tests/unit]

Each mutation is a text substitution in one file, restored afterwards (also on Ctrl-C).
Writes benchmarks/results/mutations.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src/boneage"

MUTATIONS = [
    ("RMSE without the square root", "evaluation/metrics.py",
     "np.sqrt((err**2).mean())", "(err**2).mean()"),
    ("R² with the wrong denominator", "evaluation/metrics.py",
     "ss_tot = float(((y - y.mean()) ** 2).sum())", "ss_tot = float((y ** 2).sum())"),
    ("API key not checked on /v1/report", "service/app.py",
     "    if settings.api_key is None:\n        return\n",
     '    if settings.api_key is None or request.url.path.endswith("/report"):\n        return\n'),
    ("SDS against the other sex's reference", "inference/api.py",
     "compare_ages(ba, cas[i], bool(male[i]))", "compare_ages(ba, cas[i], not male[i])"),
    ("modality LUT skipped", "data/dicom.py",
     "arr = apply_modality_lut(arr, ds)", "arr = arr"),
    ("seed pipeline's CLAHE default 4.0", "preprocess/steps.py",
     "clip_limit: float = 2.0, tile_grid: int = 8) -> Pipeline:",
     "clip_limit: float = 4.0, tile_grid: int = 8) -> Pipeline:"),
    ("no search inside a collimation field", "preprocess/hand.py",
     "if extent < RECT_EXTENT or bw * bh < 0.1 * area:", "if True:"),
    ("atomic write in place", "fileio.py",
     'fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")',
     "tmp = str(path); fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)"),
    ("file mode fix dropped", "fileio.py",
     "os.chmod(tmp, 0o666 & ~_UMASK)", "pass"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", nargs="+", default=["tests/unit"])
    a = ap.parse_args()
    rows = []
    for name, rel, old, new in MUTATIONS:
        path = SRC / rel
        text = path.read_text()
        if text.count(old) != 1:
            rows.append({"mutation": name, "killed": None, "note": "pattern not found"})
            print(f"?  {name}: pattern not found in {rel}")
            continue
        t0 = time.perf_counter()
        try:
            path.write_text(text.replace(old, new))
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:warnings",
                                "-p", "no:cacheprovider", *a.tests], cwd=ROOT,
                               capture_output=True, text=True)
        finally:
            path.write_text(text)
        killed = r.returncode != 0
        failed = [x.split("::")[-1].split(" ")[0] for x in r.stdout.splitlines()
                  if x.startswith("FAILED")]
        rows.append({"mutation": name, "file": rel, "killed": killed, "by": failed[:3],
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{'killed' if killed else 'SURVIVED':8} {name}  {failed[:1]}")
    done = [r for r in rows if r["killed"] is not None]
    rate = sum(r["killed"] for r in done) / max(len(done), 1)
    print(f"kill rate {rate:.0%} ({sum(r['killed'] for r in done)}/{len(done)})")
    (ROOT / "benchmarks/results/mutations.json").write_text(
        json.dumps({"tests": a.tests, "kill_rate": rate, "mutations": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
