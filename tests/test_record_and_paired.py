"""The typed experiment record (every committed record reads, migrated) and the one paired-differences rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from core.record import SCHEMA_VERSION, ExperimentRecord, migrate, parse_record
from stats.inference import compare
from stats.paired import frame_differences, paired_differences
from stats.sequential import sequential_compare

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "docs" / "findings").glob("*/mtl_experiment.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_every_committed_record_reads_as_the_current_schema(path):
    raw = json.loads(path.read_text())
    # written before the schema had a version (version 1, migrated), or with the current one
    assert raw.get("schema_version", SCHEMA_VERSION) == SCHEMA_VERSION
    record = parse_record(path.read_text())
    assert record.schema_version == SCHEMA_VERSION
    assert record.name == raw["name"] and record.row_names == [r["name"] for r in raw["rows"]]
    assert record.design.sequential == (raw.get("adaptive") is not None)
    if record.design.sequential:
        assert (record.design.first, record.design.max) == (raw["adaptive"]["first"], raw["adaptive"]["max"])


def test_the_architecture_record_carries_its_margin_in_its_design():
    record = parse_record((REPO / "docs/findings/architecture/mtl_experiment.json").read_text())
    assert record.design.margins == {"multitask": 1.0}


def test_a_record_round_trips_and_unknown_keys_or_newer_versions_are_refused():
    record = parse_record(COMMITTED[0].read_text())
    assert parse_record(record.to_json()) == record
    with pytest.raises(ValidationError, match="surprise"):
        ExperimentRecord.model_validate({**record.model_dump(), "surprise": 1})
    with pytest.raises(ValueError, match="newer"):
        migrate({"schema_version": SCHEMA_VERSION + 1})


def test_finished_runs_add_up_their_wall_times():
    record = parse_record(COMMITTED[0].read_text()).model_copy(update={"wall_s": None, "wall_s_runs": []})
    once = record.finished_run(10.0, interrupted=True)
    twice = once.finished_run(5.04, interrupted=False)
    assert (once.wall_s, twice.wall_s, twice.wall_s_runs, twice.interrupted) == (10.0, 15.0, [10.0, 5.0], False)


def test_paired_differences_pair_by_seed_in_ascending_order_and_drop_the_rest():
    pairs = paired_differences({2: 5.0, 0: 1.0, 1: math.nan, 7: 3.0}, {0: 0.5, 1: 1.0, 2: 4.0, 3: 9.0})
    assert pairs.seeds == (0, 2) and np.allclose(pairs.diffs, [0.5, 1.0])
    assert pairs.dropped == (1, 3, 7)
    with pytest.raises(ValueError, match="twice"):
        paired_differences(pd.Series([1.0, 2.0], index=[0, 0]), pd.Series([1.0], index=[0]))


def test_every_test_reads_the_same_differences():
    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(1, 1, 6), index=[5, 3, 1, 0, 2, 4])
    b = pd.Series(rng.normal(0, 1, 5), index=[0, 1, 2, 3, 9])
    expected = paired_differences(a, b)
    fixed, sequential = compare(a, b), sequential_compare(a, b, 3, 8)
    assert fixed["n_pairs"] == sequential["n_pairs"] == expected.n == 4
    assert fixed["delta"] == pytest.approx(expected.diffs.mean()) == sequential["delta"]
    assert fixed["dropped_seeds"] == sequential["dropped_seeds"] == "4, 5, 9"
    frame = pd.DataFrame({"variant": ["A"] * 6 + ["B"] * 5, "seed": [*a.index, *b.index], "m": [*a, *b]})
    assert np.allclose(frame_differences(frame, "A", "B", "m").diffs, expected.diffs)
