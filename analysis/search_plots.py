"""What a sampled search's report adds (a spec with `space:`, random or Optuna), as W&B Sweeps and
optuna-dashboard show it: a parallel-coordinates plot of the sampled keys against the metric, hyperparameter
importance from Optuna's own evaluators, and the best-so-far curve against trial-epochs with ASHA's stops marked.

Importance is computed on the finished trials whether or not Optuna drove the search: they are added to an
in-memory Optuna study with the spec's distributions. Under ASHA every trial is compared at the first rung (the
grace period), the budget all of them reached; without a scheduler at its final epoch. The evaluator is fANOVA
when scikit-learn is installed, PED-ANOVA (Watanabe et al. 2023, no extra dependency) otherwise.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, IntDistribution

from core.results import ExperimentResults


def distributions(space: dict) -> dict:
    """The spec's `space:` as Optuna distributions: the spec's samplers as Tune builds them (search.tuning), converted
    by Tune's own OptunaSearch, so importance sees exactly what the search sampled from."""
    from ray.tune.search.optuna import OptunaSearch

    from core.spaces import sampler

    return OptunaSearch.convert_search_space({key: sampler(spec) for key, spec in space.items()})


def analysis_metric(res: ExperimentResults) -> str:
    """multitask_raw (mIoU - SI-log) for a multitask search: the clipped score is 0 for every young model, so
    importance and ranks need the unclipped one, as ASHA does; any other metric as it is."""
    return "multitask_raw" if res.metric == "multitask" else res.metric


def _values(frame: pd.DataFrame, metric: str) -> pd.Series:
    """A metric column; multitask_raw derived from mIoU and SI-log for results from before it was reported."""
    if metric == "multitask_raw" and metric not in frame:
        return pd.to_numeric(frame["semseg_miou"], errors="coerce") - pd.to_numeric(frame["depth_silog"],
                                                                                     errors="coerce")
    return pd.to_numeric(frame[metric], errors="coerce")


def search_points(res: ExperimentResults) -> tuple[pd.DataFrame, str]:
    """One row per trial: the sampled values and the metric at a common budget; and that budget in words."""
    spec, metric = res.record.spec, analysis_metric(res)
    epoch = (spec.get("scheduler") or {}).get("grace_period") if res.record.scheduler == "asha" else None
    rows = []
    for _, t in res.frame.iterrows():
        history = res.histories.get(t["trial_id"])
        if epoch is not None and history is not None and "epoch" in history:
            at = history[pd.to_numeric(history["epoch"], errors="coerce") == epoch]
            value = float(_values(at, metric).iloc[0]) if len(at) else math.nan
        else:
            value = float(_values(t.to_frame().T, metric).iloc[0]) if t["status"] == "completed" else math.nan
        rows.append({**{k: t.get(f"config/{k}") for k in spec["space"]}, "value": value, "trial_id": t["trial_id"]})
    points = pd.DataFrame(rows).dropna(subset=["value"])
    return points, (f"epoch {epoch} (ASHA's first rung, reached by every trial)" if epoch else "the final epoch")


def _param(value, dist):
    """A config value as the distribution holds it (parquet may have turned a choice into its text)."""
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if str(c) == str(value)), value)
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def importance(points: pd.DataFrame, space: dict, mode: str) -> tuple[pd.Series, str]:
    """Importance per sampled key (sums to 1) from Optuna's evaluator, and the evaluator's name."""
    dists = distributions(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, p in points.iterrows():
        params = {k: _param(p[k], d) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(p["value"])))
    if importlib.util.find_spec("sklearn"):
        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    else:  # the top quantile needs a few trials in it
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 2 / len(points)))
        name = "PED-ANOVA"
    scores = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    return pd.Series(scores, dtype=float), name


def _axis(values: pd.Series, dist) -> np.ndarray:
    """A key's values on [0, 1]: log scale for log distributions, evenly spaced categories."""
    if isinstance(dist, CategoricalDistribution):
        index = {str(c): i for i, c in enumerate(dist.choices)}
        return np.array([index.get(str(v), 0) for v in values]) / max(len(dist.choices) - 1, 1)
    low, high, x = float(dist.low), float(dist.high), values.astype(float).to_numpy()
    if getattr(dist, "log", False):
        low, high, x = math.log10(low), math.log10(high), np.log10(x)
    return (x - low) / (high - low if high > low else 1.0)


def parallel_coordinates(points: pd.DataFrame, space: dict, metric: str, budget: str, path: Path) -> Path:
    dists = distributions(space)
    keys = list(dists)
    values = points["value"].to_numpy(dtype=float)
    span = (values.max() - values.min()) or 1.0
    cols = [_axis(points[k], dists[k]) for k in keys] + [(values - values.min()) / span]
    fig, ax = plt.subplots(figsize=(2.0 * (len(keys) + 1) + 1, 4))
    cmap = plt.get_cmap("viridis")
    for i in np.argsort(values):  # the best drawn last, on top
        ax.plot(range(len(cols)), [c[i] for c in cols], color=cmap((values[i] - values.min()) / span), alpha=0.8)
    labels = [f"{k}\n({'log ' if getattr(dists[k], 'log', False) else ''}"
              f"{'/'.join(map(str, dists[k].choices)) if isinstance(dists[k], CategoricalDistribution) else ''}"
              f"{'' if isinstance(dists[k], CategoricalDistribution) else f'{dists[k].low:g}..{dists[k].high:g}'})"
              for k in keys] + [f"{metric}\n({values.min():.2f}..{values.max():.2f})"]
    ax.set_xticks(range(len(cols)), labels)
    ax.set_yticks([])
    ax.set_title(f"Sampled keys against {metric} at {budget} ({len(values)} trials)")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(values.min(), values.max())), ax=ax,
                 label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_so_far(res: ExperimentResults, path: Path) -> Path | None:
    """The best metric reported so far against trial-epochs spent (every trial's epochs in time order)."""
    metric = analysis_metric(res)
    parts = [h.assign(trial_id=tid) for tid, h in res.histories.items()
             if h is not None and "timestamp" in h and "semseg_miou" in h]
    if not parts:
        return None
    epochs = pd.concat(parts).sort_values(["timestamp", "training_iteration"]).reset_index(drop=True)
    values = _values(epochs, metric)
    best = values.cummax() if res.mode == "max" else values.cummin()  # multitask_raw: max, like multitask
    stopped = set(res.frame.loc[res.frame["status"].astype(str).str.startswith("stopped early"), "trial_id"])
    last = epochs.groupby("trial_id").tail(1)
    stops = last[last["trial_id"].isin(stopped)].index + 1
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.step(np.arange(1, len(best) + 1), best, where="post", label=f"best {metric} so far")
    ax.scatter(np.arange(1, len(values) + 1), values, s=8, color="grey", alpha=0.5, label="an epoch's result")
    if len(stops):
        ax.scatter(stops, values.iloc[stops - 1], marker="x", color="crimson", label=f"ASHA stop ({len(stops)})")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel(metric)
    ax.legend(loc="lower right" if res.mode == "max" else "upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def search_section(res: ExperimentResults, out: Path) -> tuple[list[Path], list[str]]:
    """Figures and note lines for a sampled search; nothing for an ablation matrix."""
    space = res.record.spec.get("space")
    if not space:
        return [], []
    points, budget = search_points(res)
    figures = [f for f in [best_so_far(res, out / "best_so_far.png")] if f]
    if len(points) < 3:
        return figures, [f"Hyperparameter importance: only {len(points)} trial(s) reached {budget}; need 3."]
    scores, evaluator = importance(points, space, res.mode)
    scores.rename("importance").to_csv(out / "importance.csv", index_label="key")
    metric = analysis_metric(res)
    figures.insert(0, parallel_coordinates(points, space, metric, budget, out / "parallel_coordinates.png"))
    ranked = ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
    return figures, [f"Hyperparameter importance ({evaluator} via Optuna, of {metric} on {len(points)} trials at "
                     f"{budget}): {ranked}."]
