"""tools/default_candidates.py on a lent machine: one pack of films, one cache per pipeline."""

from __future__ import annotations

import csv
from argparse import Namespace

import pytest
from tools.default_candidates import _prepare_films, pack

from boneage.preprocess.steps import Pipeline

pytest.importorskip("torch")  # configs are validated against the model registry


def test_one_pack_of_films_is_prepared_once_per_distinct_pipeline(small_set, tmp_path):
    images, labels = small_set
    with open(labels, newline="") as f:
        ids = [r[0] for r in list(csv.reader(f))[1:31]]
    split = tmp_path / "split.csv"
    split.write_text("id,split\n" + "".join(f"{i},{'val' if k % 5 == 0 else 'train'}\n"
                                            for k, i in enumerate(ids)))
    dest = tmp_path / "pack"
    pack(Namespace(dest=str(dest), split=str(split), cache=None, images=str(images),
                   labels=str(labels)))
    configs = []
    for name, pipeline in (("a", "hand"), ("b", "hand-stretch"), ("c", "hand")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"arch: resnet18\npipeline: {pipeline}\nimage_size: 64\n")
        configs.append(cfg)
    caches = _prepare_films(dest, tmp_path / "out", configs)
    a, b, c = (caches[cfg] for cfg in configs)
    assert a == c and a != b  # the two `hand` candidates share their cache
    steps = {p: [s.name for s in Pipeline.load(p / "pipeline.json").steps] for p in (a, b)}
    assert steps[a] == ["to_uint8", "crop_hand", "squash", "scale"]
    assert steps[b] == ["to_uint8", "crop_hand", "stretch", "squash", "scale"]
    for cache in (a, b):
        with open(cache / "manifest.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == 30
