"""Per-class IoUs travel through Tune as one text field, not one number each.

Tune keeps, in the driver, a running record of every number a trial reports (max, min, average and the last-5 /
last-10 windows, per number, per trial): the ~20 per-class IoUs were a third of the ~66 numbers of an epoch, and
that record is what made the driver's memory grow with the trials (docs/performance.md). Packed, they stay in each
trial's results (result.json, progress.csv, results.parquet) and in W&B; TensorBoard shows them as one text
field. An experiment that names an `iou_<class>` (metric, objective, report column) reports them unpacked.
"""

from __future__ import annotations

import json
import math
from typing import Any

PER_CLASS_FIELD = "iou_per_class"  # {"road": 97.1, ...} as JSON text
PREFIX = "iou_"


def packed(metrics: dict[str, Any]) -> dict[str, Any]:
    """The epoch's metrics with every `iou_<class>` number moved into PER_CLASS_FIELD."""
    ious = {k[len(PREFIX):]: v for k, v in metrics.items() if k.startswith(PREFIX) and k != PER_CLASS_FIELD}
    if not ious:
        return metrics
    out = {k: v for k, v in metrics.items() if not (k.startswith(PREFIX) and k != PER_CLASS_FIELD)}
    # NaN is not JSON: an absent class stays absent rather than becoming text Python alone can read back
    out[PER_CLASS_FIELD] = json.dumps({k: v for k, v in ious.items() if not math.isnan(v)}, separators=(",", ":"))
    return out


def unpacked(result: dict[str, Any]) -> dict[str, float]:
    """`iou_<class>` -> value from a result, packed or not."""
    plain = {k: v for k, v in result.items() if k.startswith(PREFIX) and k != PER_CLASS_FIELD}
    text = result.get(PER_CLASS_FIELD)
    if isinstance(text, str) and text:
        plain.update({PREFIX + k: float(v) for k, v in json.loads(text).items()})
    return plain
