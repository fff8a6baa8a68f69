"""The callback that turns a Lightning fit into a run folder: per-epoch metrics CSV and plots,
last and best checkpoints (safetensors + model card), and the state `--resume` continues from."""

from __future__ import annotations

import copy
import os
import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch

from boneage.fileio import atomic_write_csv, read_csv_dicts
from boneage.models.checkpoint import save_checkpoint
from boneage.models.registry import count_parameters

METRIC_COLUMNS = ("epoch", "step", "train_loss", "train_mae", "train_rmse", "train_r2",
                  "val_loss", "val_mae", "val_rmse", "val_r2", "lr", "seconds")


class TimeBudget(L.Callback):
    """Stop after the epoch that crosses `minutes` of this invocation's wall clock. Lightning's
    own `max_time` counts the time saved in a resumed run's checkpoint as well, so extending a
    6-minute run with `--resume --max-minutes 5` would stop it before its first new epoch."""

    def __init__(self, minutes: float) -> None:
        self.seconds = minutes * 60.0
        self.start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if time.monotonic() - self.start >= self.seconds:
            trainer.should_stop = True


class RunRecorder(L.Callback):
    """Per epoch: metrics row, plots, last and best checkpoints, resumable state."""

    def __init__(self, out: Path, card_base: dict[str, Any], log_epochs: bool = False) -> None:
        self.out = out
        self.log_epochs = log_epochs  # one line per epoch, for logs where no progress bar runs
        self.card_base = card_base
        self.rows: list[dict[str, Any]] = []
        self.best = float("inf")
        self.t0 = 0.0

    def _load_history(self, epoch: int) -> None:
        path = self.out / "metrics.csv"
        if path.is_file():
            self.rows = [r for r in read_csv_dicts(path) if int(r["epoch"]) < epoch]
            maes = [float(r["val_mae"]) for r in self.rows if r["val_mae"]]
            self.best = min(maes) if maes else float("inf")

    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning restored a resumed run's state: keep the epochs already done
        self._load_history(trainer.current_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.t0 = time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {
            "epoch": trainer.current_epoch, "step": trainer.global_step,
            "train_loss": m.get("train_loss"), "train_mae": m.get("train_mae_epoch"),
            "train_rmse": m.get("train_rmse"), "train_r2": m.get("train_r2"),
            "val_loss": m.get("val_loss"), "val_mae": m.get("val_mae"),
            "val_rmse": m.get("val_rmse"), "val_r2": m.get("val_r2"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self.t0, 2),
        }
        if trainer.is_global_zero:
            self._record(row, pl_module.net)
        # every rank takes part (DDP strategies synchronise inside save_checkpoint);
        # Lightning writes the file on rank 0 only
        state = self.out / "state"
        tmp = state / "last.ckpt.tmp"
        if trainer.is_global_zero:
            state.mkdir(exist_ok=True)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, state / "last.ckpt")

    def _record(self, row: dict[str, Any], model) -> None:
        """Rank 0: the metrics row, plots, last and best weights with their cards."""
        self.rows.append(row)
        if self.log_epochs:
            fmt = {k: f"{row[k]:.2f}" if row[k] is not None else "-"
                   for k in ("train_loss", "train_mae", "val_mae")}
            lr = f"{row['lr']:.2e}" if row.get("lr") is not None else "-"
            print(f"{self.out.name}: epoch {row['epoch']}  train loss {fmt['train_loss']}  "
                  f"train MAE {fmt['train_mae']}  val MAE {fmt['val_mae']}  lr {lr}  "
                  f"({row['seconds']:.1f} s)", flush=True)
            if (len(self.rows) == 1 and row["val_mae"] and row["train_mae"]
                    and row["val_mae"] > 3 * row["train_mae"]):
                print(f"{self.out.name}: note: an early validation MAE far above the training "
                      "MAE is usual: batch-norm statistics are still settling (validation runs "
                      "in eval mode with them); it falls within a few epochs", flush=True)
        atomic_write_csv(self.out / "metrics.csv", METRIC_COLUMNS,
                         [[r[c] if r[c] is not None else "" for c in METRIC_COLUMNS]
                          for r in self.rows])
        from boneage.plots import training_curves

        training_curves(self.rows, self.out / "curves.png", self.out / "lr.png")
        card = self._card(row, model)
        save_checkpoint(model, card, self.out / "last.safetensors")
        if row["val_mae"] is not None and row["val_mae"] < self.best:
            self.best = row["val_mae"]
            save_checkpoint(model, card, self.out / "best.safetensors")

    def _card(self, row: dict[str, Any], model) -> dict[str, Any]:

        card = copy.deepcopy(self.card_base)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        card["metrics"] = {"val": {"mae": row["val_mae"], "rmse": row["val_rmse"],
                                   "r2": row["val_r2"]}, "epoch": row["epoch"]}
        card["training"].update({
            "epochs_run": len(self.rows),
            "seconds": round(sum(float(r["seconds"]) for r in self.rows), 1),
            "peak_memory_mb": round(peak, 1),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

        card["parameters"] = count_parameters(model)
        return card

    def summary(self) -> dict[str, Any]:
        if not self.rows:  # a resumed run that had nothing left to do still has its history
            self._load_history(10**9)
        best = min((r for r in self.rows if r["val_mae"] not in (None, "")),
                   key=lambda r: float(r["val_mae"]), default=None)
        return {"run": str(self.out), "epochs": len(self.rows),
                "best": {"epoch": int(best["epoch"]),
                         **{k: float(best[k]) if best[k] not in (None, "") else None
                            for k in ("val_mae", "val_rmse", "val_r2")}} if best else None,
                "seconds": round(sum(float(r["seconds"]) for r in self.rows), 1)}

