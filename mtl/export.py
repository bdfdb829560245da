"""Test-split prediction export: one semseg PNG (class ids) and one depth PNG per image.

Depth is written as 16-bit centimetres (0 = invalid): unlike the 8-bit disparity code of the
ground truth, it keeps far-range predictions distinguishable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from mtl.data.depth_io import DEPTH_MAX, DEPTH_MIN, depth_to_png16_cm
from mtl.engine import Runtime, predict


def export_predictions(model: nn.Module, dataset, rt: Runtime, out_dir: str | Path, tta: str = "off",
                       batch_size: int = 8) -> int:
    """Predict every image of `dataset` (a dataset with an evaluation transform) into out_dir/semseg and
    out_dir/depth, named after the input files. Returns the number of images written."""
    out = Path(out_dir)
    (out / "semseg").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    model.eval()
    written = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        rgb = batch["rgb"].to(rt.device)
        probs, depth = predict(model, rgb, rt, tta)
        n = rgb.shape[0]  # a single-task model writes its own task only
        labels = probs.argmax(1).to(torch.uint8).cpu().numpy() if probs is not None else [None] * n
        metres = depth.clamp(DEPTH_MIN, DEPTH_MAX)[:, 0].cpu().numpy() if depth is not None else [None] * n
        for index, label, d in zip(batch["index"].tolist(), labels, metres, strict=True):
            name = Path(dataset.items[index][0]).name.rsplit(".", 1)[0] + ".png"
            if label is not None:
                Image.fromarray(label).save(out / "semseg" / name)
            if d is not None:
                Image.fromarray(depth_to_png16_cm(d)).save(out / "depth" / name)
            written += 1
    return written


def read_depth_prediction(path: str | Path) -> np.ndarray:
    """16-bit centimetre PNG -> float32 metres (NaN where 0)."""
    cm = np.asarray(Image.open(path)).astype(np.float32)
    return np.where(cm > 0, cm / 100.0, np.nan).astype(np.float32)
