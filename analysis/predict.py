"""Example predictions of a finished trial, rendered from its best checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from ray.tune import Checkpoint

from core.results import ExperimentResults
from mtl.checkpoint import best_weights, load_checkpoint
from mtl.config import TrialConfig
from mtl.data.describe import dataset_info
from mtl.data.labels import colorize
from mtl.data.loading import build_data
from mtl.data.preview import colorize_depth
from mtl.data.transforms import denormalize
from mtl.engine import Runtime, predict
from mtl.models import build_model


def trial_model(res: ExperimentResults, trial_id: str) -> tuple[TrialConfig, torch.nn.Module] | None:
    """The trial's model with its best epoch's weights loaded (on the CPU), or None when it kept no checkpoint
    (the checkpoint policy keeps them for some finished trials only: search/retention.py)."""
    state = _kept_state(res, trial_id)
    if state is None:
        return None
    values = {k: v for k, v in res.configs[trial_id].items() if k != "variant"}
    # the checkpoint carries every weight: no ImageNet file needed to rebuild the network
    cfg = TrialConfig.from_dict({**values, "pretrained": False, "device": "cpu", "num_workers": 0})
    model = build_model(cfg)
    model.load_state_dict(best_weights(state))
    return cfg, model.eval()


def _kept_state(res: ExperimentResults, trial_id: str) -> dict | None:
    """What the trial kept: by the checkpoint policy's manifest, or else Tune's latest checkpoint (a running trial's
    full state; in experiments from before the policy, which kept the full states of the last and the best
    epochs, the best-scoring one)."""
    kept = res.kept_checkpoints
    if kept is not None and trial_id in kept:
        return _load(res, Checkpoint(kept[trial_id], filesystem=res.storage.fs))
    if kept is not None and not res.partial:
        return None  # the policy deleted it
    trial = next((t for t in res.tune_analysis().trials if t.trial_id == trial_id), None)
    state = _load(res, trial.checkpoint) if trial is not None else None
    if state is None or "kind" in state or "best_model" in state:
        return state
    older = res.tune_analysis().get_best_checkpoint(trial, metric=res.metric, mode=res.mode)
    return _load(res, older) or state


def _load(res: ExperimentResults, checkpoint: Checkpoint | None) -> dict | None:
    if checkpoint is None or not res.storage.exists(checkpoint.path):
        return None  # deleted by the checkpoint policy
    with checkpoint.as_directory() as directory:
        return load_checkpoint(directory)


def best_trial_id(res: ExperimentResults, variant: str) -> str | None:
    done = res.frame[(res.frame["variant"] == variant) & (res.frame["status"] == "completed")]
    if done.empty:
        return None
    values = done[res.metric].astype(float)
    if values.isna().all():  # a single-task row has no multitask score: show its first seed
        return str(done["trial_id"].iloc[0])
    return str(done.loc[values.idxmax() if res.mode == "max" else values.idxmin(), "trial_id"])


def best_trial_predictions(res: ExperimentResults, variant: str, images: int = 2) -> list[tuple[np.ndarray, ...]]:
    trial_id = best_trial_id(res, variant)
    loaded = trial_model(res, trial_id) if trial_id else None
    if loaded is None:
        return []
    cfg, model = loaded
    data = build_data(cfg)
    rt = Runtime(torch.device("cpu"), data.unit, info=dataset_info(cfg.data))
    panels = []
    for i in range(min(images, len(data.val))):
        sample = data.val[i]
        probs, depth = predict(model, sample["rgb"][None], rt, cfg.tta)
        rgb = (denormalize(sample["rgb"]).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        blank = np.full_like(rgb, 128)  # a single-task model has no prediction for the other task
        panels.append((rgb, colorize(sample["semseg"].numpy().astype(np.uint8)),
                       colorize(probs.argmax(1)[0].numpy().astype(np.uint8)) if probs is not None else blank,
                       colorize_depth(sample["depth"][0].numpy()),
                       colorize_depth(depth[0, 0].numpy()) if depth is not None else blank))
    return panels
