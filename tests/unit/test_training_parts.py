from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from boneage.errors import BoneAgeError  # noqa: E402
from boneage.training.augment import augment_batch  # noqa: E402
from boneage.training.config import AugmentConfig, load_config  # noqa: E402
from boneage.training.schedule import warmup_cosine  # noqa: E402


def test_defaults_are_the_seed_recipe():
    cfg = load_config()
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup_fraction, cfg.huber_delta,
            cfg.epochs) == (64, 5e-3, 0.01, 0.2, 15.0, 60)
    assert cfg.augment.enabled is False


def test_yaml_then_command_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("arch: resnet18\nepochs: 7\naugment: {enabled: true, rotation: 5}\n")
    cfg = load_config(p, {"epochs": 3, "lr": None})
    assert (cfg.arch, cfg.epochs, cfg.lr, cfg.augment.enabled, cfg.augment.rotation) == \
        ("resnet18", 3, 5e-3, True, 5.0)


@pytest.mark.parametrize("text,match", [
    ("epoch: 3\n", "unknown setting 'epoch'"),
    ("epochs: many\n", "must be a number"),
    ("arch: vgg\n", "unknown architecture"),
    ("augment: {spin: 3}\n", "unknown setting 'spin'"),
    ("- a list\n", "mapping"),
    ("epochs: [\n", "invalid YAML"),
    ("max_minutes: -1\n", "max_minutes"),
    ("arch: {resnet18: 1}\n", "arch must be a name"),  # was a TypeError (unhashable)
    ("pipeline: [hand]\n", "pipeline must be a name"),
    ("model: {upsample: 9}\n", None),
    ("anchor: 0.5\n", "anchor needs init"),
    ("anchor: 1.0\ninit: default\n", "anchor must be in"),
])
def test_bad_configs(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    if match is None:  # architecture options are checked when the model is built
        from boneage.models.registry import build_model

        cfg = load_config(p)
        with pytest.raises(BoneAgeError, match="upsample"):
            build_model(cfg.arch, **cfg.model)
        return
    with pytest.raises(BoneAgeError, match=match):
        load_config(p)


def test_committed_configs_load():
    from tests.conftest import ROOT

    found = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(found) >= 7  # seed, recommended, default and the default-model candidates
    for p in found:
        cfg = load_config(p)
        from boneage.models.registry import build_model

        build_model(cfg.arch, **cfg.model)  # every option of every committed config is valid


def test_warmup_cosine_shape():
    total, warm = 100, 0.2
    lrs = [warmup_cosine(s, total, warm) for s in range(total)]
    assert lrs[0] < 0.05 and lrs[19] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:20], strict=False))
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:], strict=False))
    assert lrs[-1] < 0.01


def test_augment_batch_changes_each_image_and_stays_in_range():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    x[1] = x[0]
    y = augment_batch(x, AugmentConfig(enabled=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(y[0], y[1])  # same input, different transforms
    still = AugmentConfig(True, 0, 0, 0, 0, 0, 0)
    assert torch.allclose(augment_batch(x, still), x.clamp_min(1e-6), atol=1e-5)


def test_a_film_and_its_rendering_go_through_the_same_view():
    torch.manual_seed(1)
    films = torch.rand(3, 1, 32, 32)
    rendered = films.clone()
    out = augment_batch(torch.cat([rendered, films]), AugmentConfig(enabled=True), copies=2)
    first, second = out.chunk(2)
    assert torch.allclose(first, second)  # each film's two copies transformed alike
    assert not torch.allclose(first[0], augment_batch(films, AugmentConfig(enabled=True))[0])
    rendered[1] = 1 - rendered[1]  # a rendering differs; the view stays the film's own
    out = augment_batch(torch.cat([rendered, films]), AugmentConfig(enabled=True), copies=2)
    first, second = out.chunk(2)
    assert torch.allclose(first[0], second[0]) and not torch.allclose(first[1], second[1])
    with pytest.raises(ValueError, match="equal parts"):
        augment_batch(films, AugmentConfig(enabled=True), copies=2)


def test_anchor_takes_its_share_of_the_target_from_the_frozen_starting_network():
    from boneage.training.module import BoneAgeModule

    kw = dict(arch="resnet18", model_kwargs={}, lr=1e-3, weight_decay=0.0, warmup_fraction=0.0,
              huber_delta=15.0, target_mean=100.0, target_std=40.0, augment={})
    start = BoneAgeModule(**kw).model.eval()
    m = BoneAgeModule(**kw, anchor=0.25)
    m.set_teacher(start)
    x, plain = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    sex, y = torch.tensor([1.0, 0.0]), torch.tensor([30.0, 150.0])
    with torch.no_grad():
        said = start(plain, sex).float()
    m.teacher.train()  # as Lightning leaves it each epoch: the teacher answers in eval mode
    target = m.target((x, sex, y, plain))
    assert torch.allclose(target, 0.75 * y + 0.25 * said, atol=1e-4)
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert torch.equal(m.target((x, sex, y)), y)  # validation batches: the labels
    assert torch.equal(BoneAgeModule(**kw).target((x, sex, y, plain)), y)  # anchor off
    with pytest.raises(ValueError, match="without an anchor"):
        BoneAgeModule(**kw).set_teacher(start)


def test_anchor_without_augmentation_still_hands_the_teacher_each_film():
    import lightning as L

    from boneage.training.module import BoneAgeModule

    kw = dict(arch="resnet18", model_kwargs={}, lr=1e-3, weight_decay=0.0, warmup_fraction=0.0,
              huber_delta=15.0, target_mean=100.0, target_std=40.0, augment={})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    x = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8)
    sex, y = torch.tensor([1, 0]), torch.tensor([30.0, 150.0])
    for anchor, length in ((0.5, 4), (0.0, 3)):
        m = BoneAgeModule(**kw, anchor=anchor)
        m.trainer = trainer
        trainer.training = True
        batch = m.on_after_batch_transfer((x, sex, y), 0)
        assert len(batch) == length  # the film as it is goes to the teacher, augmentation or not
        assert torch.allclose(batch[0], x.float() / 255)
        if anchor:
            assert torch.equal(batch[3], batch[0])
        trainer.validating = True
        assert len(m.on_after_batch_transfer((x, sex, y), 0)) == 3  # validation: labels only


def test_global_rank_from_launcher_environment(monkeypatch):
    from boneage.training.run import global_rank

    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert global_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert global_rank() == 1
    monkeypatch.setenv("RANK", "0")  # torchrun's global rank wins
    assert global_rank() == 0


def test_precision_auto_follows_the_cpu(monkeypatch):
    from boneage.training import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert hardware.pick_precision("auto", "auto") == "32-true"  # bf16 is slow without AMX
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert hardware.pick_precision("auto", "cpu") == "bf16-mixed"
    assert hardware.pick_precision("32-true", "auto") == "32-true"  # an explicit choice wins


def test_aspect_jitter_stretches_width_and_height_apart():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 64, 64)
    x[:, :, 16:48, 16:48] = 1.0  # a square
    cfg = AugmentConfig(True, rotation=0, scale=0, translate=0, brightness=0, contrast=0,
                        gamma=0, aspect=0.3)
    y = augment_batch(x, cfg)
    w = (y[:, 0, 32, :] > 0.5).sum(1).float()
    h = (y[:, 0, :, 32] > 0.5).sum(1).float()
    ratio = w / h
    assert ratio.min() < 0.85 and ratio.max() > 1.15  # stretched both ways
    assert torch.allclose(w * h, torch.full_like(w, 32 * 32), rtol=0.15)  # area kept
    with pytest.raises(BoneAgeError, match="aspect"):
        load_config(None, {"augment": {"aspect": 1.5}})


def test_training_curves_number_epochs_as_the_log_and_mark_the_best(tmp_path, monkeypatch):
    from boneage import plots

    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig))

    def rows(val_mae):
        return [{"epoch": str(i), "train_loss": str(3 * v), "val_loss": str(3 * v + 1),
                 "train_mae": str(v), "val_mae": str(v), "lr": "0.001"}
                for i, v in enumerate(val_mae)]

    plots.training_curves(rows([60, 30, 12, 9.1, 8.8, 9.0]), tmp_path / "c", tmp_path / "l")
    curves, lr = figs
    mae = curves.axes[1]
    assert mae.lines[0].get_xdata().tolist() == [0, 1, 2, 3, 4, 5]  # as metrics.csv, the log
    labels = [t.get_text() for t in mae.get_legend().get_texts()]
    assert "best: epoch 4, 8.80 months" in labels
    assert mae.get_yscale() == "log"  # early spikes would flatten the end
    figs.clear()
    plots.training_curves(rows([10, 9.5, 9.4]), tmp_path / "c", tmp_path / "l")
    assert figs[0].axes[1].get_yscale() == "linear"
    assert all(float(t) == int(t) for t in figs[0].axes[1].get_xticks())  # whole epochs only


def test_resume_with_a_damaged_state_is_one_line_and_changes_nothing(tmp_path, capsys):
    from boneage.cli import main

    run = tmp_path / "run"
    (run / "state").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 2\n")
    (run / "state" / "last.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 200)  # a zip cut short
    assert main(["train", "--resume", str(run), "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    assert "last.ckpt: damaged" in err and err.count("\n") == 1
    assert (run / "config.yaml").read_text() == "epochs: 2\n"  # not extended
