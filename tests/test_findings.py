"""docs/findings.md from saved artifacts: verdicts, Holm across the page, the ASHA study, the CLI round trip."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.asha_study import asha_study
from analysis.findings import FINDINGS, findings_table, main
from analysis.findings_page import _extra, footnote
from core.record import ExperimentRecord
from core.saved import SavedExperiment, read_saved


def _record(name: str, scheduler: str = "none", seeds=(0, 1, 2), sets=None, spec_path="ablations/x.yaml", **spec):
    return ExperimentRecord(name=name, spec_path=spec_path, spec={"scheduler": spec, "report": {}}, set=sets or {},
                            seeds=list(seeds), metric="multitask", mode="max", scheduler=scheduler, profile="cpu",
                            defaults={}, rows=[], algorithm="grid", baseline="", trial_count=0,
                            argv=["run_search.py", spec_path, "--seeds", str(len(seeds))], wall_s=600.0)


def _frame(values: dict[str, list[float]], status: dict[str, str] | None = None, epochs: int = 4) -> pd.DataFrame:
    rows = []
    for variant, vals in values.items():
        for seed, v in enumerate(vals):
            st = (status or {}).get(variant, "completed")
            rows.append({"variant": variant, "seed": seed, "status": st, "multitask": v, "semseg_miou": v + 10,
                         "depth_silog": 50 - v, "epochs_run": epochs if st == "completed" else 1,
                         "parameters": 10.0, "train_time_s": 60.0})
    return pd.DataFrame(rows)


def _exp(name, values, status=None, **kw) -> SavedExperiment:
    return SavedExperiment(name, _record(name, **kw), _frame(values, status), None)


BASE = [10.0, 11.0, 12.0, 10.5, 11.5, 12.5, 10.2, 11.8]
JITTER = [0.1, -0.2, 0.3, 0.0, -0.1, 0.2, -0.3, 0.1]


def _shifted(delta: float, scale: float = 1.0) -> list[float]:
    return [b + delta + scale * j for b, j in zip(BASE, JITTER, strict=True)]


def test_verdicts_reproduced_contradicted_unresolved_and_not_run():
    experiments = {
        "optimizer_lr": _exp("optimizer_lr", {"optimizer=adam, lr=0.0001": _shifted(10.0),
                                              "optimizer=sgd, lr=0.01": BASE,
                                              "optimizer=adam, lr=0.1": [0.0] * 8},
                             status={"optimizer=adam, lr=0.1": "diverged"}, seeds=range(8)),
        "depth_loss": _exp("depth_loss", {"L2": BASE, "L1": _shifted(-5.0), "berHu": _shifted(0.3, 3.0)},
                           seeds=range(8)),
        "architecture": _exp("architecture", {"joint": BASE, "branched": _shifted(1.5, 0.5),
                                              "distilled": _shifted(7.0)}, seeds=range(8)),
        # no ImageNet weights (no pretrained_dilation): dilation is measured from scratch, and says so
        "dilation": _exp("dilation", {"no dilation": BASE, "dilation (F, F, T)": _shifted(2.0)}, seeds=range(8)),
        "aspp_skip": _exp("aspp_skip", {"neither": [10.0, 11.0, 12.0], "ASPP + skip": [12.0, 13.5, 14.0]},
                          sets={"pretrained": False}),
    }
    table = findings_table(experiments).set_index("claim")
    claim = {f.experiment + ":" + f.variant: f.claim for f in FINDINGS}
    verdict = table["verdict"]
    assert verdict[claim["optimizer_lr:optimizer=adam, lr=0.0001"]] == "reproduced (direction; the course gave no size)"
    # 8 of 8 runs diverged: the exact binomial test against "half fail" settles it (3 of 3 would not: p = 0.25)
    assert verdict[claim["optimizer_lr:optimizer=adam, lr=0.1"]].startswith("reproduced (8/8 seeds diverged")
    assert verdict[claim["depth_loss:L1"]] == "contradicted"  # resolved, the other way round
    assert verdict[claim["depth_loss:berHu"]].startswith("unresolved (")
    assert verdict[claim["architecture_confirm:distilled"]] == "contradicted (a difference is resolved)"
    assert verdict[claim["architecture:branched"]] == "reproduced"  # +1.5 against the course's +1.4: inside
    assert table.loc[claim["architecture:branched"], "parameters_ratio"] == 1.0
    assert verdict[claim["pretrained_dilation:ImageNet-pretrained"]].startswith("not run: needs the")
    dilation = table.loc[claim["pretrained_dilation:pretrained + dilation (F, F, T)"]]
    assert dilation["experiment"] == "dilation" and dilation["delta"] == pytest.approx(2.0125)
    # the direction is resolved, but the course's +11 lies outside the family-level interval
    assert dilation["verdict"] == "direction reproduced, smaller than the course's +11 (outside the family-level " \
        "interval)" and dilation["delta_ci_high"] < 11
    assert "both encoders untrained" in _extra(dilation.to_dict())
    aspp = table.loc[claim["aspp_skip:ASPP + skip"]]
    assert "from scratch (--set pretrained=false)" in _extra(aspp.to_dict())
    # 3 seeds: the look-1 repeated p of the page's design (3..8), not a fixed-n t-test, and the advice to go on
    assert aspp["test"] == "group-sequential paired t (looks 3..8)" and aspp["verdict"].startswith("unresolved (")
    assert "from scratch" not in _extra(table.loc[claim["depth_loss:L1"]].to_dict())
    assert verdict[claim["se:ResNet-50 + SE"]] == "not run: no results for this experiment yet"
    tested = table["p_holm"].notna()
    assert (table.loc[tested, "p_holm"] >= table.loc[tested, "p_value"]).all()  # Holm across the page
    # simultaneous intervals: one that excludes 0 always goes with a resolved row
    excludes = (table["delta_ci_low"] > 0) | (table["delta_ci_high"] < 0)
    assert (table.loc[excludes, "p_holm"] < 0.05).all()
    tally = "Verdicts: 3 reproduced, 1 direction reproduced, 2 contradicted, 2 unresolved, 7 not run."
    assert tally in footnote(table.reset_index())


def test_asha_study_counts_epochs_on_the_asha_seeds_and_ranks_the_pick():
    sets = {"epochs": 8}
    grid = SavedExperiment("grid", _record("grid", sets=sets), _frame(
        {"a": [30.0, 31.0, 29.0], "b": [29.5, 30.8, 29.4], "c": [10.0, 11.0, 12.0]}, epochs=8), None)
    asha = _frame({"a": [0.0, 0.0], "b": [29.5, 30.8], "c": [10.0, 11.0]}, status={"a": "stopped early at epoch 1",
                                                                                   "c": "stopped early at epoch 1"})
    asha.loc[asha["variant"] == "b", "epochs_run"] = 8
    study = asha_study([grid, SavedExperiment("asha", _record("asha", "asha", (0, 1), sets, grace_period=1,
                                                                reduction_factor=3, seed_aware=False), asha, None)])
    assert list(study["run"]) == ["grid", "asha"]
    assert study.loc[0, "trial_epochs"] == 48 and study.loc[1, "trial_epochs"] == 20  # grid on seeds 0, 1 only
    assert study.loc[1, "picked"] == "b" and study.loc[1, "grid_rank"] == 2 and study.loc[1, "within_noise"]
    assert study.loc[1, "scheduler"] == "ASHA (grace 1, η=3, on multitask)" and study.loc[1, "stopped_early"] == 4


def test_cli_rebuilds_the_page_from_saved_folders_and_copies_them(tmp_path):
    for name, values in (("depth_loss", {"L2": [14.0, 15.0, 16.0], "L1": [16.0, 17.2, 18.1],
                                         "berHu": [15.5, 16.2, 16.9]}),):
        exp = tmp_path / "runs" / name
        (exp / "posthoc").mkdir(parents=True)
        (exp / "mtl_experiment.json").write_text(_record(name).to_json())
        _frame(values).to_parquet(exp / "results.parquet")
        (exp / "checkpoint_000000").mkdir()  # never copied
    out = tmp_path / "findings.md"
    main([str(tmp_path / "runs" / "depth_loss"), "--out", str(out), "--copy", str(tmp_path / "docs")])
    page = out.read_text()
    assert "| L1 beats L2 for depth: +1.6" in page and "reproduced" in page and "10.0 min" in page
    assert sorted(p.name for p in (tmp_path / "docs" / "depth_loss").iterdir()) == ["mtl_experiment.json",
                                                                                    "results.parquet"]
    again = tmp_path / "again.md"
    main([str(tmp_path / "docs" / "depth_loss"), "--out", str(again)])  # the copies rebuild the same page
    assert again.read_text() == page
    with pytest.raises(FileNotFoundError, match=r"needs mtl_experiment\.json"):
        read_saved(str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.md")])
    assert exit_info.value.code == 2


def test_the_page_gains_delta_m_for_an_experiment_with_single_task_rows():
    from analysis.findings_page import delta_m_section

    frame = _frame({"multi-task": [15.0, 16.0], "semseg only": [0.0, 0.0], "depth only": [14.0, 15.0]})
    frame["config/tasks"] = frame["variant"].map({"multi-task": "[semseg, depth]", "semseg only": "[semseg]",
                                                  "depth only": "[depth]"})
    frame.loc[frame["variant"] == "semseg only", "semseg_miou"] = 24.0
    section = "\n".join(delta_m_section({"single_task": SavedExperiment("single_task", _record("single_task"),
                                                                        frame, None)}))
    assert section.startswith("## Multi-task against single-task baselines (Δm)")
    assert "| single_task  | multi-task " in section and "Maninis et al. 2019" in section
    assert delta_m_section({"x": _exp("x", {"a": [1.0, 2.0]})}) == []


def test_diverges_needs_trials_and_leaves_errors_out_and_a_missing_variant_is_not_run():
    claim = {f.experiment + ":" + f.variant: f.claim for f in FINDINGS}
    adam_high = claim["optimizer_lr:optimizer=adam, lr=0.1"]
    # before: an errored or out-of-memory trial counted as "scores 0", so 1 diverged + 2 errors "reproduced"
    errors = _exp("optimizer_lr", {"optimizer=adam, lr=0.0001": [20.0, 21.0, 22.5],
                                   "optimizer=sgd, lr=0.01": [10.0, 10.5, 12.0],
                                   "optimizer=adam, lr=0.1": [0.0, 14.0, 15.0]})
    errors.frame.loc[errors.frame["variant"] == "optimizer=adam, lr=0.1", "status"] = ["diverged", "error", "error"]
    errors.frame.loc[errors.frame["status"] == "error", "multitask"] = float("nan")
    table = findings_table({"optimizer_lr": errors}).set_index("claim")
    assert table.loc[adam_high, "trials"] == 1 and table.loc[adam_high, "verdict"].startswith("unresolved (1/1")
    only_errors = _exp("optimizer_lr", {"optimizer=adam, lr=0.0001": [20.0, 21.0, 22.5],
                                        "optimizer=adam, lr=0.1": [0.0, 0.0]},
                       status={"optimizer=adam, lr=0.1": "error"})
    verdicts = findings_table({"optimizer_lr": only_errors}).set_index("claim")["verdict"]
    assert verdicts[adam_high].startswith("not run: no completed or diverged trial")
    # before: a renamed or missing variant gave "reproduced" with no data
    assert verdicts[claim["optimizer_lr:optimizer=adam, lr=0.0001"]] == \
        "not run: no completed trial of 'optimizer=sgd, lr=0.01' in optimizer_lr"


def test_a_design_s_ending_is_named_from_its_last_look():
    """'stopped: settled' said nothing: a futility stop, a max-reached stop and a resolved one are told apart."""
    from analysis.findings_page import stop_text

    looks = {"stopped": "settled", "looks": [{"comparisons": {"a vs b": {"decision": "resolved"},
                                                             "c vs b": {"decision": "futile"},
                                                             "d vs b": {"decision": "max"}}}]}
    assert stop_text(looks) == "stopped: 1 resolved, 1 stopped for futility, 1 at max seeds, unresolved"
    assert stop_text({"stopped": "budget", "looks": []}) == "stopped: the budget was spent"


def test_an_equivalence_under_a_post_hoc_margin_is_not_settled():
    """The committed architecture run: distilled ≈ branched within ±1 (TOST), but its margin entered the spec after
    the 3-seed result - a margin chosen after the data is not counted as settled."""
    from conftest import REPO

    from core.saved import read_saved

    table = findings_table({"architecture": read_saved(str(REPO / "docs" / "findings" / "architecture"))})
    row = table.set_index("claim").loc["Distilled ≈ branched"]
    assert row["verdict"].startswith("unresolved: equivalent within ±1 (TOST), but the margin is post hoc")
    assert row["p_equivalence_holm"] < 0.05  # what the margin would have claimed


def test_the_committed_page_is_what_its_committed_results_rebuild():
    """docs/findings.md is generated: rebuilt from docs/findings/* with its intro and notes, byte for byte."""
    from conftest import REPO

    from analysis.findings import SUMMARY_MARKERS, _experiments, build_page, summary_markdown

    docs = REPO / "docs"
    folders = sorted(str(p) for p in (docs / "findings").iterdir() if p.is_dir())
    page = build_page(folders, (docs / "findings_intro.md").read_text().strip(),
                      (docs / "findings_notes.md").read_text().strip())
    assert page == (docs / "findings.md").read_text(), "rebuild the page: see its own first lines"
    # the guide's summary is the same table's short form (--summary docs/findings-guide.md)
    guide = (docs / "findings-guide.md").read_text()
    block = guide.split(SUMMARY_MARKERS[0], 1)[1].split(SUMMARY_MARKERS[1], 1)[0].strip()
    assert block == summary_markdown(findings_table(_experiments(folders)))
