"""Reports from a real tiny search: statistics, status rows, every format, the HTML in Chromium."""

from __future__ import annotations

import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_spec
from PIL import Image
from scipy import stats

from analysis.report import build_report, main
from analysis.tables import ablation_stats, display_table, summarize
from app.cli import main as run_search
from core.results import load_results


@pytest.fixture(scope="module")
def experiment(ray_local, tmp_path_factory) -> str:
    """2 variants x 2 seeds, plus a variant that diverges; `run_search.py` builds the report at the end."""
    tmp = tmp_path_factory.mktemp("analysis")
    spec = write_spec(tmp, """
fixed: {optimizer: adam, lr: 1.0e-3}
variants:
  - {name: balanced, baseline: true}
  - {name: depth heavy, loss_weights: [0.2, 0.8]}
  - {name: exploding, optimizer: sgd, lr: 1000.0}
seeds: 2
trial_price_per_hour: 0.9
report: {posthoc_tta: ["off", flip]}  # every completed trial keeps its best weights (the checkpoint policy)
""", name="report_e2e")
    assert run_search([str(spec), "--profile", "smoke", "--storage", str(tmp / "results"), "--no-dashboard"]) == 0
    return str(tmp / "results" / "report_e2e")


def test_loader_has_one_row_per_trial_with_status(experiment):
    res = load_results(experiment)
    assert len(res.frame) == 6 and not res.partial
    assert res.frame.groupby("variant")["status"].apply(set).to_dict() == {
        "balanced": {"completed"}, "depth heavy": {"completed"}, "exploding": {"diverged"}}
    assert set(res.histories) == set(res.frame["trial_id"])
    assert (res.frame["cost"] > 0).all() and res.frame["config/loss_weights"].isin(["[0.5, 0.5]", "[0.2, 0.8]"]).all()


def test_one_row_per_variant_and_failures_never_averaged(experiment):
    res = load_results(experiment)
    st = ablation_stats(res.frame, ["balanced", "depth heavy", "exploding"], "balanced")
    table = display_table(st, bold=lambda s: s)
    assert list(table["Variant"]) == ["balanced (baseline)", "depth heavy", "exploding"]
    exploding = table.iloc[2]
    assert exploding["Status"] == "0/2 completed; 2 diverged" and exploding["Multitask"] == "—"
    balanced = st[(st["variant"] == "balanced") & (st["column"] == "semseg_miou")].iloc[0]
    values = res.frame[res.frame["variant"] == "balanced"]["semseg_miou"]
    assert balanced["n"] == 2 and balanced["mean"] == pytest.approx(values.mean())


def test_confidence_interval_matches_scipy():
    x = [61.2, 63.0, 62.4, 60.9, 64.1]
    s = summarize(x)
    low, high = stats.t.interval(0.95, df=4, loc=np.mean(x), scale=stats.sem(x))
    assert (s["n"], s["ci_low"], s["ci_high"]) == (5, pytest.approx(low), pytest.approx(high))
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    assert summarize([2.0])["n"] == 1 and math.isnan(summarize([2.0])["std"])


def _frame(groups: dict[str, list[float]], status: dict[str, list[str]] | None = None) -> pd.DataFrame:
    rows = []
    for variant, values in groups.items():
        for i, v in enumerate(values):
            st = (status or {}).get(variant, ["completed"] * len(values))[i]
            rows.append({"variant": variant, "seed": i, "status": st, "multitask": v if st == "completed" else None})
    return pd.DataFrame(rows)


def test_within_noise_marking_and_bold_best():
    frame = _frame({"base": [40.0, 40.4, 39.8], "same": [40.2, 39.9, 40.3], "better": [45.0, 45.3, 44.8]})
    st = ablation_stats(frame, ["base", "same", "better"], "base", columns=["multitask"])
    table = display_table(st)
    delta = dict(zip(table["Variant"], table["Δ Multitask"], strict=True))
    assert delta["base (baseline)"] == "baseline"
    assert "(within noise, p_adj=" in delta["same"] and "seeds for 80 % power" in delta["same"]
    assert delta["better"].startswith("+4.97 [") and delta["better"].endswith("(p_adj<0.001)")
    assert table.set_index("Variant").loc["better", "Multitask"].startswith("**45.03 ± ")


def test_mixed_status_rows_count_only_completed_seeds():
    frame = _frame({"base": [40.0, 41.0], "flaky": [50.0, 0.0, 0.0]},
                   {"flaky": ["completed", "error", "stopped early at epoch 3"]})
    st = ablation_stats(frame, ["base", "flaky"], "base", columns=["multitask"])
    row = st[st["variant"] == "flaky"].iloc[0]
    assert row["n"] == 1 and row["mean"] == 50.0
    assert row["status"] == "1/3 completed; 1 error; 1 stopped early at epoch 3"


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows = self.imgs = 0

    def handle_starttag(self, tag, attrs):
        self.rows += tag == "tr"
        self.imgs += tag == "img"


def test_every_format_is_written_and_parses(experiment):
    out = f"{experiment}/report"  # built by run_search.py at the end of the search
    md = open(f"{out}/table.md").read()
    assert md.startswith("# report_e2e\n") and md.count("\n|") == 5  # header, rule, three variants
    tex = open(f"{out}/table.tex").read()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\bfseries" in tex and tex.count("\\\\") == 4
    assert len(pd.read_csv(f"{out}/table.csv")) == 3 and len(pd.read_csv(f"{out}/stats.csv")) > 3
    sheet = pd.read_csv(f"{out}/wandb_sheet.csv")
    assert list(sheet.columns[:3]) == ["Name", "State", "loss_weights"] and sheet.columns[-1] == "Notes"
    assert len(pd.read_parquet(f"{out}/trials.parquet")) == 6 and not pd.read_parquet(f"{out}/stats.parquet").empty
    parser = _Tables()
    parser.feed(open(f"{out}/report.html").read())
    # the paired Δs the verdicts test replace per-variant bars; an axis that does not vary has no panel
    figures = {p.name for p in Path(out).glob("*.png")}
    assert {"curves.png", "deltas.png", "trends.png", "predictions.png"} <= figures and "bars.png" not in figures
    assert parser.imgs == len(figures) and parser.rows >= 1 + 3 + 1 + 6
    assert "Trends along ordered axes" in open(f"{out}/report.html").read() and "vs loss_weights[0]" in md


def test_report_cli_formats_and_rebuild(experiment, tmp_path, capsys):
    main([experiment, "--out", str(tmp_path / "r"), "--formats", "md,csv"])
    assert capsys.readouterr().out.strip().endswith("report.html")
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"table.md", "table.csv", "stats.csv", "wandb_sheet.csv",
                                                             "trends.csv", "report.json"}
    with pytest.raises(SystemExit):
        main([experiment, "--formats", "pdf"])
    assert build_report(experiment, str(tmp_path / "again")).endswith("report.html")


def test_posthoc_tta_evaluates_checkpoints_without_retraining(experiment, tmp_path, capsys):
    from analysis.posthoc import main as posthoc_main
    from analysis.posthoc import run_posthoc

    table = run_posthoc(experiment, ["off", "flip"], split="val")
    frame = pd.read_parquet(table.parent / "posthoc.parquet")
    assert len(frame) == 4 * 2 and set(frame["tta"]) == {"off", "flip"}  # 4 completed trials x 2 settings
    off = frame[frame["tta"] == "off"].set_index("trial_id")["semseg_miou"]
    histories = load_results(experiment).histories
    for trial_id, miou in off.items():  # "off" reproduces the metric of the checkpointed epoch it evaluated
        assert any(abs(miou - v) < 1e-4 for v in histories[trial_id]["semseg_miou"]), trial_id
    text = table.read_text()
    assert "## trained: balanced" in text and "paired t-test" in text and "| flip" in text
    build_report(experiment, str(tmp_path / "r"))
    assert "Post-hoc evaluations" in (tmp_path / "r" / "report.html").read_text()
    with pytest.raises(SystemExit):
        posthoc_main([experiment, "--tta", "off,sideways"])


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return path


@pytest.mark.slow  # the browser: slow tier
def test_html_report_renders_in_headless_chromium(experiment, tmp_path):
    html = f"file://{experiment}/report/report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([_chromium(), *flags, "--virtual-time-budget=10000", "--dump-dom", html], capture_output=True,
                         text=True, timeout=120).stdout
    assert 'data-images-loaded="5/5"' in dom  # every embedded figure decoded
    assert "depth heavy" in dom and dom.count("<tr>") >= 10
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, "--hide-scrollbars", "--window-size=1280,1800", f"--screenshot={shot}", html],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page


def test_figures_leave_out_axes_that_do_not_vary(tmp_path):
    from analysis import plots

    frame = pd.DataFrame({"variant": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "multitask": [10.0, 11.0, 12.0, 13.0],
                          "parameters": [13.5e6] * 4, "train_time_s": [60.0, 61.0, 60.5, 60.2]})
    assert plots.scatter(frame, tmp_path / "none.png") is None  # one model, the same time: nothing to see
    frame["train_time_s"] = [60.0, 61.0, 90.0, 92.0]
    assert plots.scatter(frame, tmp_path / "time.png") is not None
    stats_df = ablation_stats(frame.assign(status="completed"), ["a", "b"], "a", ["multitask"])
    assert plots.deltas(stats_df, tmp_path / "deltas.png").is_file()
