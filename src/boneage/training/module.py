"""The LightningModule: one model, Huber loss in months, the seed's optimiser and schedule.

Lightning supplies the rest (mixed precision, DDP over GPUs and nodes, checkpoint state), so the
same `boneage train` scales from this CPU to a multi-GPU node without code of our own.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchmetrics

from boneage.models.registry import build_model
from boneage.training.augment import augment_batch, render_batch
from boneage.training.balance import BIN_MONTHS
from boneage.training.config import AugmentConfig
from boneage.training.schedule import warmup_cosine


class BoneAgeModule(L.LightningModule):
    def __init__(self, arch: str, model_kwargs: dict[str, Any], lr: float, weight_decay: float,
                 warmup_fraction: float, huber_delta: float, target_mean: float,
                 target_std: float, augment: dict[str, Any], ema: float = 0.0,
                 age_weights: list[float] | None = None, anchor: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(arch, **model_kwargs).set_output_scale(target_mean, target_std)
        # the moving average of the weights (batch-norm statistics included) is what validation
        # sees and what is saved: it reaches a good validation MAE sooner, which pays for runs
        # a time budget cuts short (no better at the end of a full schedule: docs/training.md)
        self.ema_model = None
        if ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema_model = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(ema),
                                           use_buffers=True)
            self.ema_model.requires_grad_(False)
        # anchor > 0: a frozen copy of the starting network (set_teacher) answers on each film
        # before rendering, and that answer is `anchor` of the training target
        self.teacher: torch.nn.Module | None = None
        if anchor > 0:
            self.teacher = build_model(arch, **model_kwargs).set_output_scale(target_mean,
                                                                              target_std)
            self.teacher.requires_grad_(False)
        self.augment = AugmentConfig(**augment)
        self._render_rng = np.random.default_rng(int(torch.initial_seed()) % 2**32)
        # loss weight per year of age (training/balance.py); None: every film alike
        self.register_buffer("age_weights", None if age_weights is None
                             else torch.tensor(age_weights, dtype=torch.float32),
                             persistent=False)
        self.train_rmse = torchmetrics.MeanSquaredError(squared=False)
        self.train_r2 = torchmetrics.R2Score()
        self.val_mae = torchmetrics.MeanAbsoluteError()
        self.val_rmse = torchmetrics.MeanSquaredError(squared=False)
        self.val_r2 = torchmetrics.R2Score()

    @property
    def net(self) -> torch.nn.Module:
        """The network validated and saved: the weights' moving average when `ema` is on."""
        return self.model if self.ema_model is None else self.ema_model.module

    def set_teacher(self, model: torch.nn.Module) -> None:
        """The network the fine-tune starts from, kept frozen to answer for `anchor`."""
        if self.teacher is None:
            raise ValueError("this module was built without an anchor")
        self.teacher.load_state_dict(model.state_dict())

    def forward(self, image: torch.Tensor, sex: torch.Tensor) -> torch.Tensor:
        """Bone age in months (the network scales its z-score back itself)."""
        return self.model(image, sex).float()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, sex, y = batch
        augmenting = self.trainer.training and self.augment.enabled
        plain = x
        if augmenting and self.augment.rendering > 0:
            x = render_batch(x, self.augment.rendering, self._render_rng)
        if self.trainer.training and self.teacher is not None:
            # the film as rendered and as it was, through one view: the teacher's answer on
            # the second is what the network would have said had the film not been re-rendered
            both = torch.cat([x, plain]).float().div_(255.0)
            if augmenting:
                both = augment_batch(both, self.augment, 2)
            x, plain = both.chunk(2)
            return (x.contiguous(memory_format=torch.channels_last), sex.float(), y.float(),
                    plain.contiguous(memory_format=torch.channels_last))
        x = x.float().div_(255.0)
        if augmenting:
            x = augment_batch(x, self.augment)
        return x.contiguous(memory_format=torch.channels_last), sex.float(), y.float()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, sex, y = batch[:3]
        pred = self(x, sex)
        loss = self.loss(pred, self.target(batch))
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("train_mae", (pred - y).abs().mean(), on_step=True, on_epoch=True,
                 prog_bar=True, sync_dist=True)
        self.train_rmse.update(pred.detach(), y)
        self.train_r2.update(pred.detach(), y)
        return loss

    def target(self, batch) -> torch.Tensor:
        """What the network is trained towards: the label, or with `anchor` that share of it
        replaced by the starting network's estimate of the film before rendering (batch[3])."""
        y = batch[2]
        if len(batch) < 4 or self.teacher is None:
            return y
        self.teacher.eval()  # Lightning sets every submodule training each epoch
        with torch.no_grad():
            said = self.teacher(batch[3], batch[1]).float()
        return (1 - self.hparams.anchor) * y + self.hparams.anchor * said

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Huber loss in months, each film weighted by its year of age when `age_balance` is on."""
        loss = F.huber_loss(pred, y, delta=self.hparams.huber_delta, reduction="none")
        if self.age_weights is not None:
            year = (y / BIN_MONTHS).floor().long().clamp(0, len(self.age_weights) - 1)
            loss = loss * self.age_weights[year]
        return loss.mean()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema_model is not None:
            self.ema_model.update_parameters(self.model)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, sex, y = batch
        pred = self.net(x, sex).float()
        self.log("val_loss", F.huber_loss(pred, y, delta=self.hparams.huber_delta),
                 on_epoch=True, sync_dist=True)
        self.val_mae.update(pred, y)
        self.val_rmse.update(pred, y)
        self.val_r2.update(pred, y)

    def on_validation_epoch_end(self) -> None:
        self.log("val_mae", self.val_mae.compute(), prog_bar=True, sync_dist=True)
        self.log("val_rmse", self.val_rmse.compute(), sync_dist=True)
        self.log("val_r2", self.val_r2.compute(), sync_dist=True)
        # validation closes each training epoch, so the epoch's training metrics are complete
        # here (and logged before any callback's on_train_epoch_end reads them)
        if self.train_r2.update_called:
            self.log("train_rmse", self.train_rmse.compute(), sync_dist=True)
            self.log("train_r2", self.train_r2.compute(), sync_dist=True)
        for m in (self.val_mae, self.val_rmse, self.val_r2, self.train_rmse, self.train_r2):
            m.reset()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        warm = self.hparams.warmup_fraction
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
