"""The tasks a model can learn, each with its head, loss and metrics, and what "better" means for each metric.

A config's `tasks` is a list of these names (any non-empty subset, in this order): the model gets one head per
task, the trainer one loss per task, evaluation one set of metrics per task.

- semseg: a head of the dataset's class count (logits); class ids with 255 = ignore; cross-entropy; mIoU and the
  per-class IoU.
- depth: one channel in the config's depth unit; metres with NaN = invalid; l2 / l1 / berHu / SI-log; SI-logRMSE,
  abs rel, RMSE, δ<1.25.
- normals: three channels, normalised to unit length; unit vectors in the camera frame (x right, y down, z
  forward) with NaN = invalid; 1 − cosine; the mean and median angle, the % of pixels within 11.25°, 22.5°, 30°.

Δm (analysis.delta_m) averages, per task, the relative change of the task's `DELTA_M_METRICS` against its
single-task baseline, then over the tasks: LibMTL's convention (Lin & Zhang 2023), with the course's own metric
for depth (SI-logRMSE) and mIoU for semseg.
"""

from __future__ import annotations

TASKS: tuple[str, ...] = ("semseg", "depth", "normals")
COURSE_TASKS: tuple[str, ...] = ("semseg", "depth")  # the course's two tasks: `multitask` is defined on them

NORMALS_THRESHOLDS = (11.25, 22.5, 30.0)  # degrees: the shares of pixels within these angles (Eigen & Fergus 2015)

# every metric a task reports at evaluation, and whether lower is better
TASK_METRICS: dict[str, dict[str, bool]] = {
    "semseg": {"semseg_miou": False},
    "depth": {"depth_silog": True, "depth_abs_rel": True, "depth_rmse": True, "depth_delta1": False},
    "normals": {"normals_mean": True, "normals_median": True, "normals_11": False, "normals_22": False,
                "normals_30": False},
}
# the metrics Δm averages per task (LibMTL averages over all of a task's metrics; the course ranks depth by SI-log)
DELTA_M_METRICS: dict[str, tuple[str, ...]] = {
    "semseg": ("semseg_miou",),
    "depth": ("depth_silog",),
    "normals": ("normals_mean", "normals_median", "normals_11", "normals_22", "normals_30"),
}
# the metric that stands for the task in a table's first columns and on a frontier's axis
HEADLINE: dict[str, str] = {"semseg": "semseg_miou", "depth": "depth_silog", "normals": "normals_mean"}


def lower_is_better(metric: str) -> bool:
    """Whether lower is better for an evaluation metric of any task (False for an unknown name)."""
    return any(metric in metrics and metrics[metric] for metrics in TASK_METRICS.values())


def task_of(metric: str) -> str | None:
    for task, metrics in TASK_METRICS.items():
        if metric in metrics:
            return task
    return None


def canonical_tasks(given) -> tuple[str, ...]:
    """`given` (a name or a list) in the one order of `TASKS`; ValueError naming what is allowed."""
    names = (given,) if isinstance(given, str) else tuple(given)
    if not names or len(set(names)) != len(names) or not set(names) <= set(TASKS):
        raise ValueError(f"allowed: a non-empty list of distinct tasks from {list(TASKS)}, e.g. [semseg, depth], "
                         "[semseg, depth, normals] or [depth]")
    return tuple(t for t in TASKS if t in names)
