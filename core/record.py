"""The experiment record, `mtl_experiment.json`: one typed model, written by the search, read by analysis.

What a run leaves besides Tune's own files (no environment, no secrets). Version 1 is every record written before
the schema carried a version (the committed `docs/findings/*/mtl_experiment.json`): `migrate` reads it as version 2
with the keys older versions lacked set to their defaults, so old experiments stay readable.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2


class Row(BaseModel):
    """A row of the ablation table: its name and the TrialConfig keys it overrides."""

    model_config = ConfigDict(extra="forbid")
    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    baseline: bool = False


class Design(BaseModel):
    """How a comparison's seeds were chosen, carried with every result: a fixed number of seeds, or a group-sequential
    design (first .. max seeds, the Holm family it is judged in) - and the equivalence margins declared for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str = "fixed"  # "fixed" | "group-sequential"
    first: int | None = None
    max: int | None = None
    family: int | None = None
    margins: dict[str, float] = Field(default_factory=dict)

    @property
    def sequential(self) -> bool:
        return self.kind == "group-sequential"


class Extends(BaseModel):
    """The experiment an `--extend` run added seeds to."""

    model_config = ConfigDict(extra="allow")
    uri: str
    trials: int
    wall_s: float | None = None
    argv: list[str] | None = None
    seeds: list[int] | None = None


class ExperimentRecord(BaseModel):
    """mtl_experiment.json. `extra="forbid"`: a key no version of the schema knows is an error, not a silent dict."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    name: str
    spec_path: str | None = None
    spec: dict[str, Any]
    profile: str
    defaults: dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict)
    rows: list[Row]
    seeds: list[int]
    ablated: list[str] = Field(default_factory=list)
    metric: str
    mode: str
    algorithm: str
    scheduler: str
    scheduler_metric: str | None = None
    baseline: str
    trial_count: int
    started: str = Field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))
    argv: list[str] = Field(default_factory=list)
    trial_config_fields: list[str] = Field(default_factory=list)
    adaptive: dict[str, Any] | None = None
    comparisons: list[list[str]] = Field(default_factory=list)
    runs: list[dict[str, Any]] = Field(default_factory=list)  # each driver run's configuration (search.runconfig)
    estimate_s: float | None = None
    estimate_how: str | None = None
    extends: Extends | None = None
    finished: str | None = None
    wall_s: float | None = None
    wall_s_runs: list[float] = Field(default_factory=list)
    interrupted: bool | None = None

    @property
    def row_names(self) -> list[str]:
        return [r.name for r in self.rows]

    @property
    def objectives(self) -> dict[str, str] | None:
        """{metric: max|min} of a multi-objective experiment (the spec's `objectives`), else None."""
        return dict(self.spec.get("objectives") or {}) or None

    @property
    def design(self) -> Design:
        """The seed design this experiment's comparisons were judged under (no label parsing anywhere)."""
        margins = dict((self.spec.get("report") or {}).get("equivalence_margin") or {})
        if self.adaptive is None:
            return Design(margins=margins)
        return Design(kind="group-sequential", first=self.adaptive["first"], max=self.adaptive["max"],
                      family=self.adaptive.get("family"), margins=margins)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, default=str)

    def finished_run(self, wall_s: float, interrupted: bool) -> ExperimentRecord:
        """The record at the end of a run: after `--resume`, the driver runs' wall times add up."""
        runs = self.wall_s_runs or ([self.wall_s] if self.wall_s is not None else [])
        runs = [*runs, round(wall_s, 1)]
        return self.model_copy(update={"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": round(sum(runs), 1),
                                       "wall_s_runs": runs, "interrupted": interrupted})


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A record of any earlier schema version as the current one (version 1: no `schema_version` key)."""
    version = int(data.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(f"mtl_experiment.json: schema_version {version} is newer than this mtl-tune reads "
                         f"({SCHEMA_VERSION}): upgrade mtl-tune")
    out = dict(data)
    if version == 1:
        out["wall_s_runs"] = out.get("wall_s_runs") or []
        out["comparisons"] = out.get("comparisons") or []
    out["schema_version"] = SCHEMA_VERSION
    return out


def parse_record(text: str | bytes) -> ExperimentRecord:
    """mtl_experiment.json's text -> the typed record (migrated from older schema versions)."""
    return ExperimentRecord.model_validate(migrate(json.loads(text)))
