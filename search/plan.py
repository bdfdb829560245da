"""`--dry-run --plan-from EXPERIMENT`: seeds, trials, trial-hours and cost the adaptive design will need, planned
from a pilot or an earlier run of the same rows (its per-trial results only).

Per comparison: the observed Δ and the noise of its per-seed differences, the power of *this* design (first ..
max seeds, looks at every seed, the repeated p-value at Holm's first-step level) simulated at the observed effect,
the seeds it expects to use, and the smallest `max` that would reach 80 % power. Power at an observed effect is
optimistic: a pilot's promising effects are biased upwards.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.saved import read_saved
from search.spec import SeedsBlock, SpecError
from search.trials import Experiment
from stats.inference import ALPHA
from stats.paired import frame_differences
from stats.planning import design_power, seeds_for_power


def paired_by_seed(completed: pd.DataFrame, row: str, reference: str, metric: str) -> list[float]:
    """Per-seed differences row - reference of completed trials, in seed order, on the seeds both have."""
    return [float(d) for d in frame_differences(completed, row, reference, metric).diffs]


def plan(exp: Experiment, uri: str) -> str:
    """The planning table for `exp`'s comparisons from the experiment at `uri`."""
    try:
        pilot = read_saved(uri)
    except (OSError, ValueError) as e:
        raise SpecError(f"--plan-from {uri}: {e}") from None
    design = exp.adaptive or SeedsBlock()
    family = design.family or len(exp.comparisons)
    level = ALPHA / family
    done = pilot.frame[pilot.frame["status"] == "completed"]
    rows, expected = [], {}
    for row, reference in exp.comparisons:
        d = paired_by_seed(done, row, reference, exp.metric)
        sd = float(np.std(d, ddof=1)) if len(d) >= 2 else math.nan
        effect = float(np.mean(d)) / sd if sd and np.isfinite(sd) else math.nan
        power, seeds = design_power(effect, design.first, design.max, level) if np.isfinite(effect) else \
            (math.nan, float(design.max))
        need = seeds_for_power(effect, design.first, level) if np.isfinite(effect) else None
        for r in (row, reference):
            expected[r] = max(expected.get(r, 0.0), seeds)
        rows.append({"comparison": f"{row} vs {reference}", "pilot seeds": len(d),
                     "Δ": f"{np.mean(d):+.2f}" if len(d) else "—", "sd of Δ": f"{sd:.2f}" if np.isfinite(sd) else "—",
                     f"power ({design.first}..{design.max})": f"{power:.2f}" if np.isfinite(power) else "—",
                     "expected seeds": f"{seeds:.1f}", "max for 80 %": str(need) if need else "> 40"})
    return _plan_text(exp, pilot.frame, pd.DataFrame(rows), expected, design, family)


def _plan_text(exp: Experiment, frame: pd.DataFrame, table: pd.DataFrame, expected: dict[str, float],
               design: SeedsBlock, family: int) -> str:
    seconds = frame.groupby("variant")["train_time_s"].mean() if "train_time_s" in frame else pd.Series(dtype=float)
    trials = sum(expected.values())
    hours = sum(n * float(seconds.get(r, seconds.mean() if len(seconds) else math.nan)) for r, n in
                expected.items()) / 3600
    price = exp.spec.trial_price_per_hour
    cost = f", ~${hours * price:.2f} at ${price:g}/trial-hour" if price is not None and np.isfinite(hours) else ""
    return "\n".join([
        f"plan from {len(frame)} pilot trial(s): design first {design.first}, max {design.max} seeds; each comparison "
        f"at the repeated p < 0.05 / {family} (Holm's first step over {family} test(s))",
        table.to_markdown(index=False, disable_numparse=True),
        f"expected: ~{trials:.0f} trials, ~{hours:.2f} trial-hours{cost} in all, the pilot's seeds included (--extend "
        "does not rerun them); at the pilot trials' mean times; an upper bound: futility stops are not counted",
        "note: power at an observed effect is optimistic; a pilot's promising effects are biased upwards."])
