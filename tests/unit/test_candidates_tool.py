"""tools/default_candidates.py on a lent machine: one pack of films, one cache per pipeline."""

from __future__ import annotations

import csv
import json
from argparse import Namespace

import pytest
from tools.default_candidates import _prepare_films, _shrink, pack, run_summary, unpack

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


def test_pack_replaces_an_old_pack_whole_and_never_deletes_other_files(small_set, tmp_path):
    """It once cleared its default folder, .devdata/, wheels and all, before writing the pack."""
    images, labels = small_set
    with open(labels, newline="") as f:
        ids = [r[0] for r in list(csv.reader(f))[1:11]]
    split = tmp_path / "split.csv"

    def run(dest, n):
        split.write_text("id,split\n" + "".join(f"{i},train\n" for i in ids[:n]))
        pack(Namespace(dest=str(dest), split=str(split), cache=None, images=str(images),
                       labels=str(labels)))

    other = tmp_path / "devdata"
    other.mkdir()
    (other / "monai.whl").write_bytes(b"wheel")
    with pytest.raises(SystemExit, match="not a pack"):
        run(other, 10)
    assert [p.name for p in other.iterdir()] == ["monai.whl"]
    dest = tmp_path / "pack"
    run(dest, 10)
    run(dest, 4)  # a second pack replaces the first, with nothing of it left over
    with open(dest / "films.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pack")) == ["pack"]
    split.write_text("id,split\n" + "".join(f"{i},train\n" for i in ids[:3]) + "999999,val\n")
    with pytest.raises(SystemExit, match="no row in"):
        run_with = Namespace(dest=str(dest), split=str(split), cache=None, images=str(images),
                             labels=str(labels))
        pack(run_with)
    more = tmp_path / "labels.csv"  # a label without its film
    more.write_text(labels.read_text().rstrip("\n") + "\n999999,100,True\n")
    with pytest.raises(SystemExit, match="no film for id 999999"):
        pack(Namespace(**{**vars(run_with), "labels": str(more)}))
    with open(dest / "films.csv", newline="") as f:  # the pack before it, whole
        assert len(list(csv.DictReader(f))) == 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pack")) == ["pack"]


def _fake_run(tmp_path, name: str, epochs_run: int, best_epoch: int):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,val_mae\n" + "".join(
        f"{e},{10 - e / 100}\n" for e in range(epochs_run)))
    (run / "best.json").write_text(json.dumps({
        "metrics": {"val": {"mae": 9.0}, "epoch": best_epoch},
        "training": {"seconds": 1.0, "device": "cpu"}}))
    return run


def test_the_summary_tells_a_time_cut_schedule_from_a_finished_or_early_stopped_one(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("arch: resnet18\nepochs: 100\nearly_stopping_patience: 20\n")
    cut = run_summary(_fake_run(tmp_path, "cut", 66, 62), 0, cfg)
    assert (cut["cut"], cut["epochs_run"], cut["epochs_planned"]) == (True, 66, 100)
    assert cut["val"]["val"]["mae"] == 9.0
    assert run_summary(_fake_run(tmp_path, "done", 100, 95), 0, cfg)["cut"] is False
    # stopped 20 epochs after its best: early stopping, not the clock
    assert run_summary(_fake_run(tmp_path, "early", 97, 76), 0, cfg)["cut"] is False
    failed = run_summary(tmp_path / "never-started", 1, cfg)
    assert (failed["rc"], failed["val"], failed["cut"]) == (1, None, False)


def test_a_run_shrunk_to_int8_for_the_trip_home_still_loads(tmp_path):
    """The weights are rewritten, so their card's digest is too (else the run is refused)."""
    import torch

    from boneage.models.checkpoint import load_checkpoint, save_checkpoint
    from boneage.models.registry import build_model

    torch.manual_seed(0)
    path = save_checkpoint(build_model("resnet18").eval(),
                           {"arch": "resnet18", "model_kwargs": {}, "input_size": 64},
                           tmp_path / "best.safetensors")
    before = json.loads((tmp_path / "best.json").read_text())["weights_sha256"]
    _shrink(path)
    model, card = load_checkpoint(path)
    assert card["weights_dtype"] == "int8" and card["weights_sha256"] != before


def test_unpack_points_each_run_at_the_cache_of_its_own_pipeline(tmp_path):
    """A `hand-standard` candidate came home beside `hand` ones; every run was once pointed at
    the one --cache given, whatever films it had been trained on."""
    import tarfile

    from boneage.training.config import load_config
    from boneage.training.run import pipeline_for

    parts, caches = tmp_path / "parts", {}
    parts.mkdir()
    with tarfile.open(tmp_path / "runs.tar", "w") as tar:
        for name, pipeline in (("r-hand", "hand"), ("r-standard", "hand-standard")):
            run = tmp_path / "there" / name
            run.mkdir(parents=True)
            (run / "config.yaml").write_text(f"arch: resnet18\npipeline: {pipeline}\n"
                                             "image_size: 100\n")
            pipe = pipeline_for(load_config(run / "config.yaml"))
            (run / "best.json").write_text(json.dumps({"pipeline": pipe.to_dict(),
                                                       "data": {}}))
            (run / "provenance.csv").write_text("cache,source,source_sha256\n/there,/there,\n")
            tar.add(run, arcname=name)
            caches[name] = tmp_path / f"cache-{pipeline}"
            caches[name].mkdir()
            (caches[name] / "pipeline.json").write_text(pipe.to_json())
    data = (tmp_path / "runs.tar").read_bytes()
    (parts / "runs.tar.00").write_bytes(data[:5000])
    (parts / "runs.tar.01").write_bytes(data[5000:])
    split = tmp_path / "split.csv"
    split.write_text("id,split\n1,train\n2,val\n3,test\n")
    dest = tmp_path / "home"

    def run(*given):
        unpack(Namespace(parts=str(parts), dest=str(dest), split=str(split),
                         cache=[str(caches[g]) for g in given]))

    with pytest.raises(SystemExit, match="r-standard was trained.*--pipeline hand-standard"):
        run("r-hand")
    assert list(dest.iterdir()) == []  # refused before anything landed
    (parts / "runs.tar.01").rename(tmp_path / "aside")  # a part that did not come back
    with pytest.raises(SystemExit, match="do not make a whole tar"):
        run("r-standard", "r-hand")
    assert list(dest.iterdir()) == []
    (tmp_path / "aside").rename(parts / "runs.tar.01")
    run("r-standard", "r-hand")
    for name in caches:
        with open(dest / name / "provenance.csv", newline="") as f:
            assert next(csv.DictReader(f))["cache"] == str(caches[name].resolve())
        card = json.loads((dest / name / "best.json").read_text())
        assert card["data"]["split_counts"] == {"train": 1, "val": 1, "test": 1}
    with pytest.raises(SystemExit, match="exists already"):
        run("r-standard", "r-hand")
