"""Short end-to-end runs: train (and resume), evaluate, compare. Real 100 px films where
available, else generated ones."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lightning")

from boneage.cli import main  # noqa: E402
from boneage.errors import BoneAgeError  # noqa: E402
from boneage.fileio import read_csv_dicts  # noqa: E402
from boneage.training.config import load_config  # noqa: E402
from boneage.training.run import train  # noqa: E402


def _cfg(**kw):
    base = {"arch": "resnet18", "epochs": 2, "batch_size": 32, "image_size": 48,
            "pipeline": "squash", "lr": 2e-3, "workers": 2}
    return load_config(None, {**base, **kw})


def test_train_evaluate_compare(small_set, tmp_path, capsys):
    images, labels = small_set
    run = tmp_path / "run"
    summary = train(run, _cfg(epochs=3), images=str(images), labels=str(labels), progress=False)
    assert summary["epochs"] == 3
    log = capsys.readouterr().out  # without a progress bar: one line per epoch
    assert "run: epoch 0  train loss" in log and " lr " in log and "run: epoch 2" in log
    rows = read_csv_dicts(run / "metrics.csv")
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0]  # it learns
    assert all(r["train_rmse"] and r["train_r2"] and r["val_r2"] for r in rows)
    for name in ("config.yaml", "split.csv", "curves.png", "lr.png", "best.safetensors",
                 "best.json", "last.safetensors", "last.json", "state/last.ckpt"):
        assert (run / name).is_file(), name
    card = json.loads((run / "best.json").read_text())
    assert card["pipeline"]["steps"][1] == {"name": "squash", "size": 48,
                                            "interpolation": "nearest"}
    assert card["metrics"]["val"]["mae"] == pytest.approx(
        min(float(r["val_mae"]) for r in rows))
    assert card["training"]["peak_memory_mb"] > 0 and card["parameters"] > 1e6

    # evaluate: the report's validation MAE is the one training measured (same pipeline)
    rc = main(["evaluate", "--model", str(run), "--images", str(images), "--labels",
               str(labels), "--subset", "val", "--out", str(run / "eval"), "--json"])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"n", "mae", "rmse", "r2"} <= set(metrics)
    assert metrics["mae"] == pytest.approx(card["metrics"]["val"]["mae"], abs=0.05)
    assert set(metrics["by_sex"]) == {"male", "female"} and len(metrics["by_age_band"]) == 5
    for name in ("metrics.json", "predictions.csv", "scatter.png", "bland_altman.png",
                 "residuals.png", "mae_by_age.png", "report.html"):
        assert (run / "eval" / name).is_file(), name
    assert "data:image/png;base64" in (run / "eval" / "report.html").read_text()

    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    lo, hi = metrics["mae_ci95"]
    assert "resnet18" in md and f"{metrics['mae']:.2f}" in md and f"{lo:.2f}-{hi:.2f}" in md
    assert "| squash |" in md and "| no |" in md  # pipeline and TTA columns
    assert (tmp_path / "cmp" / "compare.html").is_file()
    # an evaluation beside a card's validation figure: refused unless asked for
    import shutil

    shutil.copytree(run, tmp_path / "no-eval", ignore=shutil.ignore_patterns("eval"))
    mixed = ["compare", str(run), str(tmp_path / "no-eval"), "--out", str(tmp_path / "c2")]
    capsys.readouterr()
    assert main(mixed) == 2
    assert "measured differently" in capsys.readouterr().err
    assert not (tmp_path / "c2").exists()
    assert main([*mixed, "--allow-mixed"]) == 0

    # the folder holds a run now: a second train into it is refused
    with pytest.raises(BoneAgeError, match="already holds a run"):
        train(run, _cfg(), images=str(images), labels=str(labels), progress=False)


def test_time_budget_stops_after_an_epoch(small_set, tmp_path):
    images, labels = small_set
    summary = train(tmp_path / "budget", _cfg(epochs=6, max_minutes=0.0001), images=str(images),
                    labels=str(labels), progress=False)
    assert summary["epochs"] == 1 and (tmp_path / "budget" / "best.safetensors").is_file()
    # the budget is this invocation's: resumed with one, the run gets one more epoch (the
    # time already spent, saved in its state, does not stop it before it starts)
    again = train(tmp_path / "budget", resume=True, progress=False, max_minutes=0.0001)
    assert again["epochs"] == 2


def test_resume_continues_from_the_right_step(small_set, tmp_path, monkeypatch):
    from boneage.training import callbacks

    images, labels = small_set
    run = tmp_path / "run"
    real = callbacks.RunRecorder.on_train_epoch_end

    def crash_after_second_epoch(self, trainer, pl_module):
        real(self, trainer, pl_module)
        if trainer.current_epoch == 1:
            raise RuntimeError("power cut")

    monkeypatch.setattr(callbacks.RunRecorder, "on_train_epoch_end", crash_after_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        train(run, _cfg(epochs=4), images=str(images), labels=str(labels), progress=False)
    monkeypatch.setattr(callbacks.RunRecorder, "on_train_epoch_end", real)
    rows = read_csv_dicts(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    per_epoch = int(rows[0]["step"])

    summary = train(run, resume=True, progress=False)
    rows = read_csv_dicts(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [int(r["step"]) for r in rows] == [per_epoch * k for k in (1, 2, 3, 4)]
    assert summary["epochs"] == 4
    # the learning rate went on along the same schedule and ended at zero
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-9)


def test_ema_weights_are_the_ones_validated_saved_and_resumed(small_set, tmp_path):
    import torch
    from safetensors.torch import load_file

    images, labels = small_set
    run = tmp_path / "ema"
    summary = train(run, _cfg(epochs=2, ema=0.9), images=str(images), labels=str(labels),
                    progress=False)
    assert summary["epochs"] == 2
    state = torch.load(run / "state" / "last.ckpt", map_location="cpu",
                       weights_only=True)["state_dict"]
    saved = load_file(run / "last.safetensors")
    key = next(k for k in saved if k.endswith("weight") and saved[k].ndim == 4)
    # the saved network is the moving average, not the raw weights of the last step
    assert torch.equal(saved[key].float(), state[f"ema_model.module.{key}"].float())
    assert not torch.equal(state[f"ema_model.module.{key}"], state[f"model.{key}"])
    assert state["ema_model.n_averaged"].item() == int(read_csv_dicts(
        run / "metrics.csv")[-1]["step"])
    # resumed, the average goes on from where it was (its count follows the steps)
    train(run, resume=True, progress=False, epochs=3)
    state = torch.load(run / "state" / "last.ckpt", map_location="cpu",
                       weights_only=True)["state_dict"]
    assert state["ema_model.n_averaged"].item() == int(read_csv_dicts(
        run / "metrics.csv")[-1]["step"])


def test_training_errors(small_set, tmp_path, capsys):
    images, labels = small_set
    assert main(["train", "--images", str(images), "--labels", str(labels), "--arch", "vgg",
                 "--out", str(tmp_path / "r")]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert main(["train", "--images", str(images), "--labels", str(labels), "--ema", "1.5",
                 "--out", str(tmp_path / "r")]) == 2
    assert "ema must be" in capsys.readouterr().err
    assert main(["train", "--images", str(images), "--labels", str(labels), "--age-balance",
                 "2", "--out", str(tmp_path / "r")]) == 2
    assert "age_balance must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no run to resume" in capsys.readouterr().err
    (tmp_path / "empty.csv").write_text("id,boneage,male\n")
    assert main(["train", "--images", str(images), "--labels", str(tmp_path / "empty.csv"),
                 "--out", str(tmp_path / "r2")]) == 2
    assert "no rows" in capsys.readouterr().err
    # a refused start leaves no run behind: the same folder can be used right after
    assert main(["train", "--images", str(images), "--labels", str(labels), "--val-fraction",
                 "0", "--out", str(tmp_path / "r3")]) == 2
    assert "both training and validation" in capsys.readouterr().err
    assert not (tmp_path / "r3" / "config.yaml").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--images", str(images), "--labels", str(labels),
                 "--out", str(blocker / "run")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_help_imports_no_heavy_modules():
    import subprocess
    import sys

    code = ("import sys\nfrom boneage.cli import build_parser\n"
            "p = build_parser()\n"
            "try:\n    p.parse_args(['train', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'lightning', 'monai', 'cv2', 'matplotlib')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "--resume" in out and "--config" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_given_validation_csv_is_the_validation_split(small_set, tmp_path):
    from boneage.data.splits import load_split

    images, labels = small_set
    lines = labels.read_text().strip().splitlines()
    header, rows = lines[0], lines[1:]
    (tmp_path / "train.csv").write_text("\n".join([header, *rows[:-30]]) + "\n")
    # the validation CSV in the RSNA validation format
    val = ["Image ID,male,Bone Age (months)"]
    for r in rows[-30:]:
        rid, age, male = r.split(",")
        val.append(f"{rid},{male},{age}")
    (tmp_path / "val.csv").write_text("\n".join(val) + "\n")
    run = tmp_path / "run"
    train(run, _cfg(epochs=1), images=str(images), labels=str(tmp_path / "train.csv"),
          val_labels=str(tmp_path / "val.csv"), progress=False)
    split = load_split(run / "split.csv")
    assert sorted(i for i, s in split.items() if s == "val") == \
        sorted(r.split(",")[0] for r in rows[-30:])
    assert sum(s == "train" for s in split.values()) == len(rows) - 30


def test_init_starts_from_another_models_weights(small_set, tmp_path):
    from safetensors.numpy import load_file

    images, labels = small_set
    data = {"images": str(images), "labels": str(labels), "progress": False}
    train(tmp_path / "a", _cfg(epochs=1), **data)
    # a refused init (another architecture) leaves nothing behind
    with pytest.raises(BoneAgeError, match="init: .* this run trains densenet121"):
        train(tmp_path / "b", _cfg(arch="densenet121", init=str(tmp_path / "a")), **data)
    assert not (tmp_path / "b" / "config.yaml").exists()
    train(tmp_path / "b", _cfg(epochs=1, lr=1e-12, init=str(tmp_path / "a")), **data)
    a = load_file(str(tmp_path / "a" / "best.safetensors"))
    b = load_file(str(tmp_path / "b" / "best.safetensors"))
    conv = [k for k in a if k.endswith("conv1.weight")]
    assert conv and all(abs(a[k] - b[k]).max() < 1e-6 for k in conv)  # carried over
    assert json.loads((tmp_path / "b" / "best.json").read_text())["training"]["config"][
        "init"] == str(tmp_path / "a")


def test_a_finished_run_extended_to_more_epochs(small_set, tmp_path, capsys):
    images, labels = small_set
    run = tmp_path / "run"
    train(run, _cfg(epochs=2), images=str(images), labels=str(labels), progress=False)
    # nothing left to do: the summary still reports the run's best
    again = train(run, resume=True, progress=False)
    assert again["epochs"] == 2 and again["best"] is not None
    with pytest.raises(BoneAgeError, match="at least 2"):
        train(run, resume=True, progress=False, epochs=1)
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    rows = read_csv_dicts(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert load_config(run / "config.yaml").epochs == 3
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 3 and summary["best"]["val_mae"] > 0


def test_an_anchored_fine_tune_keeps_its_teacher_frozen_and_out_of_the_weights(
        small_set, tmp_path, capsys):
    import torch
    from safetensors.numpy import load_file

    images, labels = small_set
    data = {"images": str(images), "labels": str(labels), "progress": False}
    train(tmp_path / "a", _cfg(epochs=1), **data)
    rendering = {"enabled": True, "rendering": 0.5}
    train(tmp_path / "b", _cfg(epochs=1, init=str(tmp_path / "a"), anchor=0.5,
                               augment=rendering), **data)
    a = load_file(str(tmp_path / "a" / "best.safetensors"))
    b = load_file(str(tmp_path / "b" / "best.safetensors"))
    assert set(b) == set(a)  # the network alone is saved, not its teacher
    assert any(abs(a[k] - b[k]).max() > 1e-4 for k in a if k.endswith("conv1.weight"))
    state = torch.load(tmp_path / "b" / "state" / "last.ckpt", map_location="cpu",
                       weights_only=False)["state_dict"]
    teacher = {k.removeprefix("teacher."): v for k, v in state.items()
               if k.startswith("teacher.")}
    assert set(teacher) == set(a)
    # frozen: not trained, and its batch-norm statistics not updated by the batches it saw
    assert all(torch.allclose(teacher[k].float(), torch.from_numpy(a[k]).float(), atol=1e-6)
               for k in a), "the teacher moved"
    assert "anchor: 0.5" in (tmp_path / "b" / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--images", str(images), "--labels", str(labels), "--anchor", "0.5",
                 "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "anchor needs init" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_limit_with_a_split_file_samples_its_training_and_validation_films(small_set,
                                                                          tmp_path):
    images, labels = small_set
    ids = [r.split(",")[0] for r in labels.read_text().strip().splitlines()[1:]]
    # most films held out, as in benchmarks/results/default_split.csv: a quick run must still
    # train and validate (it once drew only held-out films and refused to start)
    parts = ["train"] * 30 + ["val"] * 10 + ["test"] * (len(ids) - 40)
    (tmp_path / "split.csv").write_text(
        "id,split\n" + "".join(f"{i},{p}\n" for i, p in zip(ids, parts, strict=True)))
    train(tmp_path / "q", _cfg(epochs=1, limit=20), images=str(images), labels=str(labels),
          split_file=str(tmp_path / "split.csv"), progress=False)
    split = read_csv_dicts(tmp_path / "q" / "split.csv")
    assert len(split) == 20 and {r["split"] for r in split} == {"train", "val"}


def test_limit_trains_on_a_stratified_subset(small_set, tmp_path, capsys):
    images, labels = small_set
    summary = train(tmp_path / "q", _cfg(epochs=1, limit=40, age_balance=0.5),
                    images=str(images), labels=str(labels), progress=False)
    split = read_csv_dicts(tmp_path / "q" / "split.csv")
    assert len(split) == 40 and summary["epochs"] == 1
    # a weighted loss trains, and the run's resolved config says it was on
    assert "age_balance: 0.5" in (tmp_path / "q" / "config.yaml").read_text()
    out = capsys.readouterr().out
    assert "--limit: 40 films" in out and "Tip:" not in out


def test_dry_run_runs_one_batch_each_and_keeps_nothing(small_set, tmp_path, capsys,
                                                       monkeypatch):
    from boneage.training.module import BoneAgeModule

    images, labels = small_set
    steps = []
    real = BoneAgeModule.training_step

    def counting(self, *args, **kwargs):
        steps.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BoneAgeModule, "training_step", counting)
    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.iterdir())
    assert main(["train", "--images", str(images), "--labels", str(labels), "--arch",
                 "resnet18", "--pipeline", "squash", "--image-size", "48", "--epochs", "5",
                 "--workers", "2", "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dry run: one training and one validation batch" in out and "nothing kept" in out
    assert len(steps) == 1
    assert set(tmp_path.iterdir()) == before
    # a dry run starts nothing to resume
    assert main(["train", "--resume", str(tmp_path), "--dry-run"]) == 2


def test_tensorboard_logger_and_provenance(small_set, tmp_path):
    pytest.importorskip("tensorboard")
    from importlib import metadata

    images, labels = small_set
    run = tmp_path / "tb"
    train(run, _cfg(epochs=1, limit=40, logger="tensorboard"), images=str(images),
          labels=str(labels), progress=False)
    assert list((run / "tensorboard").glob("events.out.tfevents*"))
    card = json.loads((run / "best.json").read_text())
    env = card["training"]["environment"]
    assert env["torch"] == metadata.version("torch") and env["monai"] and env["python"]
    assert len(card["data"]["images_sha256"]) == 64


def test_images_digest_follows_the_pixels():
    import numpy as np

    from boneage.preprocess.prepare import Cache
    from boneage.preprocess.steps import Pipeline
    from boneage.training.run import _images_digest

    imgs = np.zeros((2, 8, 8), np.uint8)
    a = Cache(["1", "2"], imgs, np.ones(2), np.ones(2), Pipeline(()), None)
    same = Cache(["1", "2"], imgs.copy(), np.ones(2), np.ones(2), Pipeline(()), None)
    changed = imgs.copy()
    changed[1, 3, 3] = 1
    b = Cache(["1", "2"], changed, np.ones(2), np.ones(2), Pipeline(()), None)
    assert _images_digest(a) == _images_digest(same) != _images_digest(b)
