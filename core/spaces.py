"""A spec's `space:` entries (`{loguniform: [1e-5, 1e-1]}`, `{choice: [...]}`, ...) as Ray Tune search spaces: what
the search samples from (search.tuning) and what the report's parameter importance converts to Optuna's
distributions (analysis.search_plots) - one definition for both."""

from __future__ import annotations

from typing import Any

from ray import tune


def sampler(spec: dict[str, Any]):
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        return tune.choice(args)
    return {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint,
            "quniform": tune.quniform}[kind](*args)
