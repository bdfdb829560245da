"""Seed-aware asynchronous successive halving: ASHA's rungs, decided per row on the mean over its seeds.

Plain ASHA stops or promotes each trial on its own result, so with seeds a row can lose one replicate to an
unlucky seed and keep another, and the table's mean then mixes epochs. Ray's docs advise against `Repeater` with
ASHA, and no Tune scheduler averages seeds, hence this `TrialScheduler`. A row (the trials sharing a `variant`)
is decided at a rung once every one of its seeds has reported there: its mean is compared with the cutoff of
the rows decided at that rung before it (the top 1 / reduction_factor continue, as in ASHA). Seeds that reached
the rung early keep training until the decision; then all of them go on together, or all stop at once (running
siblings are stopped through Tune's controller, not at their next report: the epoch they started is not
finished for nothing). A seed that
reaches the next rung while its row still waits (its siblings run later, e.g. with few workers) forces the
decision on the seeds seen so far, so no trial runs ahead of its row by more than one rung. A row without a score
(NaN, e.g. a single-task row ranked on `multitask_raw`) ranks last. The rungs are written to the experiment's
storage after every decision and read back on `--resume` (Tune restores a scheduler as it was at the start).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from search.raycompat import running_trials, stop_trial


class LiveTrials:
    """The choice of Tune's FIFOScheduler (the first PENDING trial, else the first PAUSED, in the order Tune added
    them) without its scan of every trial of the experiment at each step of the driver's loop, twice when none
    waits: at 3 000 trials of a 10 000-trial search that scan was a third of the driver's time (py-spy on
    `bench.search_overhead`), and it grows with every finished trial. The unfinished trials are kept here, so a
    step costs what is pending or running. Mixed in before a FIFOScheduler subclass."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._live: dict[Trial, None] = {}  # insertion-ordered: the experiment's order

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_live": {}}  # Tune pickles the scheduler before any trial; never trials with it

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if not trial.is_finished():  # a --resume adds finished trials too (their status set first)
            self._live[trial] = None

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        for trial in [t for t in self._live if t.is_finished()]:
            del self._live[trial]
        for status in (Trial.PENDING, Trial.PAUSED):
            for trial in self._live:
                if trial.status == status:
                    return trial
        return None


class LiveFIFOScheduler(LiveTrials, FIFOScheduler):
    """Tune's FIFOScheduler (no early stopping), at a cost per step that does not grow with the finished trials."""


class RankedASHAScheduler(LiveTrials, ASHAScheduler):
    """Ray's ASHA, ranking trials on its own metric (e.g. `multitask_raw`) while Tune's TuneConfig keeps the
    experiment's (e.g. `multitask`, for checkpoints and the best result); Ray would refuse both set at once."""

    def __init__(self, metric: str, mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rank = (metric, mode)
        super().set_search_properties(metric, mode)

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return True  # keep the ranking metric; the experiment's metric is Tune's business


class SeedAwareASHAScheduler(LiveTrials, FIFOScheduler):
    def __init__(self, seeds: int, max_t: int, grace_period: int = 1, reduction_factor: float = 3.0,
                 time_attr: str = "training_iteration", metric: str | None = None, mode: str | None = None,
                 group_by: str = "variant", state_file: tuple | None = None) -> None:
        """`state_file`: (pyarrow filesystem, path) where the rungs are kept after every decision: Tune restores a
        scheduler as it was when the search started, so `--resume` reads its rungs back from there."""
        super().__init__()
        self.state_file, self._loaded = state_file, state_file is None
        if seeds < 1 or grace_period < 1 or reduction_factor <= 1 or max_t < grace_period:
            raise ValueError("need seeds >= 1, grace_period >= 1, reduction_factor > 1, max_t >= grace_period")
        self.seeds, self.time_attr, self.group_by = seeds, time_attr, group_by
        self.rf = reduction_factor
        levels = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9) + 1
        self.rungs = [grace_period * reduction_factor**k for k in range(levels) if grace_period * reduction_factor**k
                      < max_t]
        self._metric, self._mode = metric, mode
        self.values: dict[float, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        self.decided: dict[float, dict[str, float]] = defaultdict(dict)  # rung -> row -> mean (in "max" terms)
        self.stopped_rows: dict[str, float] = {}  # row -> the rung it was stopped at
        self.trial_epochs = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        # a metric given at construction is the ranking metric and stays (Tune's own may differ)
        self._metric, self._mode = self._metric or metric, self._mode or mode
        return True

    def _row(self, trial: Trial) -> str:
        return str(trial.config.get(self.group_by))

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if not self._loaded:
            self._load()
        if self.time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        self.trial_epochs += 1
        row, t = self._row(trial), result[self.time_attr]
        if row in self.stopped_rows:
            return TrialScheduler.STOP  # a sibling seed's rung decided for the whole row
        action = self._record(trial, row, t, result)
        if action == TrialScheduler.STOP:
            self._stop_siblings(tune_controller, row, trial)
        return action

    def _score(self, result: dict):
        """The result as this scheduler ranks it, larger is better: the metric, sign-flipped for "min"; no score
        (e.g. a single-task row ranked on multitask_raw) ranks last, not never."""
        value = float(result[self._metric])
        return (value if self._mode == "max" else -value) if math.isfinite(value) else -math.inf

    def _record(self, trial: Trial, row: str, t: float, result: dict) -> str:
        for i, rung in enumerate(self.rungs):
            following = self.rungs[i + 1] if i + 1 < len(self.rungs) else math.inf
            if t >= following and self.values[rung][row] and row not in self.decided[rung]:
                # a seed reached the next rung while its row still waits at this one: decide on what is seen
                self._decide(rung, row, force=True)
                if row in self.stopped_rows:
                    return TrialScheduler.STOP
            if t >= rung and trial.trial_id not in self.values[rung][row]:
                self.values[rung][row][trial.trial_id] = self._score(result)
                self._decide(rung, row)
                break
        return TrialScheduler.STOP if row in self.stopped_rows else TrialScheduler.CONTINUE

    def _stop_siblings(self, tune_controller, row: str, current: Trial) -> None:
        """Stop the row's other running seeds now; their last reported result stays their final one. A seed that
        has not reported yet runs to its first report (then stops there), so every trial has a result."""
        for other in running_trials(tune_controller):
            if (other is not current and self._row(other) == row and other.status == Trial.RUNNING
                    and self.time_attr in (other.last_result or {})):
                stop_trial(tune_controller, other)

    def _decide(self, rung: float, row: str, force: bool = False) -> None:
        seen = self.values[rung][row]
        if row in self.decided[rung] or (len(seen) < self.seeds and not force):
            return  # wait for every seed of the row at this rung
        mean = float(np.mean(list(seen.values())))
        others = [v for v in self.decided[rung].values() if math.isfinite(v)]
        cutoff = np.percentile(others, (1 - 1 / self.rf) * 100) if others else None
        self.decided[rung][row] = mean
        if cutoff is not None and mean < cutoff:  # -inf (no score) is below any cutoff
            self.stopped_rows[row] = rung
        self._save()

    def _state(self) -> dict:
        def plain(v: float) -> float | str:
            return v if math.isfinite(v) else str(v)

        return {"values": {str(r): {row: {t: plain(v) for t, v in seen.items()} for row, seen in rows.items()}
                           for r, rows in self.values.items()},
                "decided": {str(r): {row: plain(v) for row, v in rows.items()} for r, rows in self.decided.items()},
                "stopped_rows": self.stopped_rows}

    def _save(self) -> None:
        if self.state_file is None:
            return
        fs, path = self.state_file
        try:
            with fs.open_output_stream(path) as f:
                f.write(json.dumps(self._state()).encode())
        except OSError:  # a storage hiccup: the next decision writes it again
            pass

    def _load(self) -> None:
        """The rungs of an earlier run of this experiment (`--resume`), once."""
        self._loaded = True
        fs, path = self.state_file
        try:
            with fs.open_input_stream(path) as f:
                state = json.loads(f.read())
        except (OSError, ValueError):
            return
        self._restore_state(state)

    def _restore_state(self, state: dict) -> None:
        for rung, rows in state["values"].items():
            for row, seen in rows.items():
                self.values[float(rung)][row] = {t: float(v) for t, v in seen.items()}
        for rung, rows in state["decided"].items():
            self.decided[float(rung)] = {row: float(v) for row, v in rows.items()}
        self.stopped_rows = {row: float(r) for row, r in state["stopped_rows"].items()}

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        return None

    def debug_string(self) -> str:
        return (f"SeedAwareASHA on {self._metric}: rungs {self.rungs}, {len(self.stopped_rows)} row(s) stopped "
                f"({', '.join(f'{r} at {t:g}' for r, t in self.stopped_rows.items()) or 'none'})")
