"""Training data held in memory as uint8 tensors; scaling and augmentation happen per batch
on the training device (see BoneAgeModule.on_after_batch_transfer)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def make_loader(images: np.ndarray, male: np.ndarray, months: np.ndarray, batch_size: int,
                shuffle: bool, seed: int = 0) -> DataLoader:
    ds = TensorDataset(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
                       torch.from_numpy(male.astype(np.float32)),
                       torch.from_numpy(months.astype(np.float32)))
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=0,
                      pin_memory=torch.cuda.is_available(), drop_last=False)
