"""Data flows one way: a stage never imports a stage above it (checked on the source)."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

ORDER = ["data", "preprocess", "models", "training", "clinical", "inference", "evaluation",
         "service", "dicomnode"]
PKG = ROOT / "src" / "boneage"


def imported_stages(path) -> set[str]:
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("boneage."):
            stages.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            stages |= {a.name.split(".")[1] for a in node.names if a.name.startswith("boneage.")}
    return stages & set(ORDER)


def test_no_stage_imports_a_higher_one():
    bad = []
    for i, stage in enumerate(ORDER):
        for path in (PKG / stage).rglob("*.py"):
            higher = {s for s in imported_stages(path) if ORDER.index(s) > i}
            bad += [f"{path.relative_to(PKG)} imports {s}" for s in sorted(higher)]
    # shared modules at the top (errors, fileio, plots) import no stage at all
    for name in ("errors.py", "fileio.py", "plots.py"):
        bad += [f"{name} imports {s}" for s in imported_stages(PKG / name)]
    assert bad == []
