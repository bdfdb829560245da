"""Build an experiment's report: tables in every format, figures, and one self-contained report.html.

    python -m analysis.report EXPERIMENT_DIR [--out DIR] [--formats md,tex,csv,parquet,html]

EXPERIMENT_DIR is local or s3://bucket/prefix/name. Re-run it any time - also while a search is
still running: the report is then labelled as partial.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import plots
from analysis.delta_m import delta_m, delta_m_note, delta_m_text, missing_tasks, single_task_reference
from analysis.search_plots import search_section
from analysis.tables import (
    DEFAULT_COLUMNS,
    NORMALS_COLUMNS,
    TESTED,
    ablation_stats,
    display_table,
    estimate_line,
    stats_footnote,
    step_costs,
    time_split,
    trend_lines,
    wandb_sheet,
)
from analysis.tradeoff import Section, report_section
from core.layout import RESULTS_FILE
from core.record import ExperimentRecord
from core.results import ExperimentResults, load_results, storage_use
from core.saved import read_saved
from stats.inference import axis_trends

FORMATS = ("md", "tex", "csv", "parquet", "html")
SEARCH_ROWS = 25  # rows of a sampled search's table: its best trials
TRIAL_COLUMNS = ("variant", "seed", "status", "epochs_run", "multitask", "semseg_miou", "depth_silog", "best_epoch",
                 "best_multitask", "train_time_s")


def default_columns(res: ExperimentResults) -> list[str]:
    """The course's columns; a normals task's after SI-log where trials learn it; the cost with a price."""
    columns = list(DEFAULT_COLUMNS)
    if "normals_mean" in res.frame and pd.to_numeric(res.frame["normals_mean"], errors="coerce").notna().any():
        at = columns.index("depth_silog") + 1
        columns[at:at] = NORMALS_COLUMNS
    return columns + (["cost"] if res.record.spec.get("trial_price_per_hour") is not None else [])


def delta_m_for(res: ExperimentResults) -> tuple[pd.DataFrame, str | None]:
    """Δm % per multi-task variant, against the experiment's own single-task rows or those of the reference
    experiment named by `report: {single_task: DIR}`; (empty, None) when neither has every task."""
    reference, source, ref_frame = single_task_reference(res.frame), "this experiment", res.frame
    target = res.record.spec["report"].get("single_task")
    if missing_tasks(res.frame, reference) and target:
        try:  # its saved results suffice (a docs/findings/ copy too)
            ref_frame = read_saved(target).frame
            reference, source = single_task_reference(ref_frame), target
        except (OSError, ValueError) as e:
            return pd.DataFrame(), f"No Δm: the single-task reference {target} could not be read ({e})."
    dm = delta_m(res.frame, reference, ref_frame)
    return (dm, delta_m_note(reference, source, dm)) if not dm.empty else (dm, None)


def with_delta_m(table: pd.DataFrame, dm: pd.DataFrame) -> pd.DataFrame:
    if dm.empty:
        return table
    texts = {r["variant"]: delta_m_text(r) for _, r in dm.iterrows()}
    return table.assign(**{"Δm %": [texts.get(v.removesuffix(" (baseline)"), "—") for v in table["Variant"]]})


def _short(value) -> str:
    """A sampled value for a row label: 3 significant digits for floats (the config columns keep them all)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _rows_and_baseline(res: ExperimentResults) -> tuple[list[str], str]:
    """Table rows in the spec's order (or `report.order`); a search gets one row per sampled trial."""
    spec = res.record.spec
    if spec.get("space"):
        keys = list(spec["space"])
        best = res.frame.sort_values(f"best_{res.metric}", ascending=res.mode == "min", na_position="last")
        labels = {t: f"#{i + 1} " + ", ".join(f"{k}={_short(best.loc[j, 'config/' + k])}" for k in keys)
                  for i, (j, t) in enumerate(zip(best.index, best["trial_id"], strict=True))}
        res.frame["variant"] = res.frame["trial_id"].map(labels)
        # the best SEARCH_ROWS trials: a table, curves and predictions of every trial of a 1000-trial search would
        # take minutes and say nothing more (every trial is in trials.parquet and the search figures)
        rows = [labels[t] for t in best["trial_id"]][:SEARCH_ROWS]
        return rows, rows[0] if rows else ""
    rows = spec["report"].get("order") or [r.name for r in res.record.rows]
    return rows, spec["report"].get("baseline") or res.record.baseline


def _latex(make_table) -> str:
    plain = make_table(lambda s: s)
    marked = make_table(lambda s: "<best>")  # numpy would strip a NUL marker
    bold = np.where(marked.to_numpy() == "<best>", "font-weight: bold;", "")
    styler = plain.style.hide(axis="index").format(escape="latex")
    styler = styler.apply(lambda _: bold, axis=None)
    return styler.to_latex(hrules=True, convert_css=True, column_format="l" * plain.shape[1])


def _html_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=False, border=0, classes="results", na_rep="")


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    img = f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'
    return f"<figure>{img}<figcaption>{path.stem}</figcaption></figure>"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222} table.results{border-collapse:collapse;
font-size:13px;margin:1em 0} table.results th,table.results td{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top} table.results th{background:#f3f3f3} .partial{background:#fff3cd;padding:.6em;
border:1px solid #e0c060;font-weight:bold} figure{display:inline-block;margin:.5em} img{max-width:100%}
pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto} .meta td{padding:2px 12px 2px 0}"""
# Marks <body data-images-loaded="ok/total"> once the page is loaded: a quick check that every embedded figure
# decoded (the report test reads it from headless Chromium's DOM).
_SCRIPT = """window.addEventListener('load',()=>{const i=[...document.images];document.body.dataset.imagesLoaded=
i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});"""


def _front_html(front: Section | None) -> str:
    if front is None or front.table is None:
        return ""
    return f"<h2>Trade-off</h2>{_html_table(front.table.map(lambda v: html.escape(str(v))))}<p>" \
        f"{html.escape(front.note)}</p>"


def _html(res: ExperimentResults, table: pd.DataFrame, trials: pd.DataFrame, figures: list[Path],
          notes: list[str], front: Section | None = None) -> str:
    rec = res.record
    banner = ""
    if res.partial:
        done = int((~res.frame["status"].str.startswith("running")).sum()) if not res.frame.empty else 0
        banner = (f'<p class="partial">Partial results: {done} of {rec.trial_count} trials finished '
                  "(the search is still running or was interrupted). Statistics cover finished trials only.</p>")
    meta = {"experiment": res.uri, "profile": rec.profile, "metric": f"{rec.metric} ({rec.mode})",
            "trials": rec.trial_count, "seeds": ", ".join(map(str, rec.seeds)),
            "--set": ", ".join(f"{k}={v}" for k, v in rec.set.items()) or "(none)",
            "started": rec.started,
            "report built": time.strftime("%Y-%m-%d %H:%M:%S")}
    meta_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    spec_text = yaml.safe_dump({"spec": rec.spec, "defaults (fixed + profile)": rec.defaults}, sort_keys=False)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mtl-tune report: {html.escape(res.name)}</title>
<style>{_CSS}</style></head><body data-images-loaded="pending">
<h1>mtl-tune report: {html.escape(res.name)}</h1>{banner}<table class="meta">{meta_rows}</table>
<h2>Ablation table</h2><p>mean ± std [95 % CI, t-distribution] over completed seeds; Δ against the baseline
[95 % CI]; best value per column in bold. Failed and stopped runs are listed in the status column, never averaged
in.</p>{_html_table(table)}<p>{html.escape(notes[0])}</p>
<h2>{_notes_heading(rec)}</h2><ul>{''.join(f"<li>{html.escape(n)}</li>" for n in notes[1:-1]) or
"<li>No ordered numeric axis in this experiment.</li>"}</ul><p>{html.escape(notes[-1])}</p>
{_front_html(front)}{_posthoc_section(res)}<h2>Trials</h2>{_html_table(trials)}
<h2>Figures</h2>{''.join(_img(f) for f in figures)}
<h2>Spec and profile</h2><pre>{html.escape(spec_text)}</pre><script>{_SCRIPT}</script></body></html>"""


def _notes_heading(record: ExperimentRecord) -> str:
    return "Hyperparameter importance" if record.spec.get("space") else "Trends along ordered axes"


def _posthoc_section(res: ExperimentResults) -> str:
    """The post-hoc table (`python -m analysis.posthoc`) of a local experiment, when it has been made."""
    path = Path(res.uri) / "posthoc" / "table.md"
    if res.storage.is_s3 or not path.is_file():
        return ""
    return f"<h2>Post-hoc evaluations</h2><pre>{html.escape(path.read_text())}</pre>"


def _figures(res: ExperimentResults, rows: list[str], stats_df: pd.DataFrame, fits: pd.DataFrame,
             out: Path, trade: Section | None) -> list[Path]:
    # with objectives the trade-off figure replaces the scatter of multitask against cost
    scatter = trade.figure if trade is not None else plots.scatter(res.frame, out / "scatter.png")
    figs = [plots.curves(res, rows, out / "curves.png"), plots.deltas(stats_df, out / "deltas.png"),
            scatter, plots.trends(res.frame, fits, out / "trends.png"),
            plots.predictions(res, rows, out / "predictions.png", images=2 if len(rows) <= 3 else 1)]
    return [f for f in figs if f is not None]


def write_report(res: ExperimentResults, out: Path, formats=FORMATS) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rows, baseline = _rows_and_baseline(res)
    columns = res.record.spec["report"].get("columns") or default_columns(res)
    margins = (res.record.spec.get("report") or {}).get("equivalence_margin")
    stats_df = ablation_stats(res.frame, rows, baseline, columns, res.record.adaptive, margins)
    dm, dm_note = delta_m_for(res)

    def make_table(bold=lambda s: f"**{s}**") -> pd.DataFrame:  # the ablation table, with Δm % when it exists
        return with_delta_m(display_table(stats_df, bold), dm)

    table = make_table()
    tested = [c for c in columns if c in TESTED]
    fits = axis_trends(res.frame, [] if res.record.spec.get("space") else res.record.ablated, tested)
    search_figures, search_notes = search_section(res, out)  # sampled searches: importance, parallel coordinates
    shown = (f" The table shows the best {len(rows)} of {len(res.frame)} sampled trials (all of them are in "
             "trials.parquet and the search figures)." if len(rows) < len(res.frame) and
             res.record.spec.get("space") else "")
    trade = report_section(res.frame, rows, res.record.objectives, res.record.spec["report"].get("reference_point"),
                           bool(res.record.spec.get("space")), out)
    notes = [stats_footnote(stats_df) + (f" {dm_note}" if dm_note else "") + shown, *trend_lines(fits),
             *search_notes, *([trade.note] if trade else [])]
    front = f"\n\n## Trade-off\n\n{trade.table.to_markdown(index=False)}\n\n{trade.note}\n" \
        if trade is not None and trade.table is not None else ""
    timing = "\n\n".join(t for t in (time_split(res.frame), step_costs(res.frame), estimate_line(res.record),
                                      storage_use(res)) if t)
    trials = res.frame[[c for c in TRIAL_COLUMNS if c in res.frame]].round(3)
    if "md" in formats:
        title = f"# {res.name}" + (" (partial results)" if res.partial else "")
        lines = "".join(f"- {n}\n" for n in notes[1:])
        (out / "table.md").write_text(f"{title}\n\n{table.to_markdown(index=False)}\n\n{notes[0]}\n\n{lines}\n"
                                      f"{timing}\n{front}")
    if "tex" in formats:
        (out / "table.tex").write_text(_latex(make_table))
    if "csv" in formats:
        make_table(lambda s: s).to_csv(out / "table.csv", index=False)
        stats_df.to_csv(out / "stats.csv", index=False)
        if not dm.empty:
            dm.to_csv(out / "delta_m.csv", index=False)
        if trade is not None and trade.table is not None:
            trade.table.to_csv(out / "front.csv", index=False)
        fits.to_csv(out / "trends.csv", index=False)
        wandb_sheet(res.frame, res.record.ablated).to_csv(out / "wandb_sheet.csv", index=False)
    if "parquet" in formats:
        stats_df.to_parquet(out / "stats.parquet", index=False)
        res.frame.to_parquet(out / "trials.parquet", index=False)
    if "html" in formats:
        html_table = make_table(lambda s: f"<strong>{html.escape(s)}</strong>")
        html_table = html_table.map(lambda v: v if str(v).startswith("<strong>") else html.escape(str(v)))
        figures = search_figures + _figures(res, rows, stats_df, fits, out, trade)
        (out / "report.html").write_text(_html(res, html_table, trials, figures, [*notes, timing], trade))
    (out / "report.json").write_text(json.dumps({"partial": res.partial, "rows": rows, "baseline": baseline}))
    return out / "report.html"


def build_report(uri: str, out: str | None = None, formats=FORMATS) -> str:
    """Report of the experiment at `uri`; S3 experiments are built locally and uploaded next to the results."""
    return _build(load_results(uri), out, formats)


def _build(res: ExperimentResults, out: str | None, formats) -> str:
    if res.frame.empty:
        raise SystemExit(f"{res.uri}: no trial has started yet; nothing to report")
    if res.storage.is_s3:
        local = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"mtl-report-{res.name}-"))
        path = write_report(res, local, formats)
        for f in local.iterdir():
            res.storage.write_bytes(f"{res.uri.removeprefix('s3://')}/report/{f.name}", f.read_bytes())
        return f"{res.uri}/report/{path.name} (local copy: {path})"
    return str(write_report(res, Path(out) if out else Path(res.uri) / "report", formats))


def _ended(res: ExperimentResults, since: float) -> bool:
    """The search is over: every trial finished, or the driver wrote results.parquet (it does so at the end,
    also after Ctrl-C) since we started watching."""
    if not res.partial:
        return True
    info = res.storage.fs.get_file_info(f"{res.uri.removeprefix('s3://')}/{RESULTS_FILE}")
    return info.mtime is not None and info.mtime.timestamp() >= since


def watch(uri: str, out: str | None = None, formats=FORMATS, every: float = 60.0,
          max_rounds: int | None = None) -> str | None:
    """Rebuild the report every `every` seconds while a search runs (labelled partial); returns the last
    report's path once the experiment has ended (or after `max_rounds`)."""
    since, rounds, path = time.time(), 0, None
    scratch = None  # an S3 report is built in one local folder for every round, not a new one each minute
    if out is None and uri.startswith("s3://"):
        scratch = Path(tempfile.mkdtemp(prefix=f"mtl-report-{uri.rstrip('/').rsplit('/', 1)[-1]}-"))
    while max_rounds is None or rounds < max_rounds:
        rounds += 1
        res = load_results(uri)
        ended = _ended(res, since)
        if res.frame.empty:
            print(f"{time.strftime('%H:%M:%S')} waiting: no trial has started yet", flush=True)
        else:
            if scratch is not None:  # emptied: a figure an earlier round drew and this one does not is not uploaded
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir()
            path = _build(res, str(scratch) if scratch else out, formats)
            state = "final" if not res.partial else ("partial, search ended" if ended else "partial")
            print(f"{time.strftime('%H:%M:%S')} report ({state}): {path}", flush=True)
        if ended:
            return path
        time.sleep(every)
    return path


def parser() -> argparse.ArgumentParser:
    """The command line (also what docs/reference.md shows and a test checks)."""
    p = argparse.ArgumentParser(prog="python -m analysis.report",
                                description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("experiment", help="experiment directory or s3://bucket/prefix/name.")
    p.add_argument("--out", help="output directory (default EXPERIMENT/report).")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}.")
    p.add_argument("--watch", action="store_true", help="rebuild while the search runs; stop when it ends.")
    p.add_argument("--every", type=float, default=60.0, help="seconds between rebuilds with --watch.")
    return p


def main(argv: list[str] | None = None) -> None:
    p = parser()
    a = p.parse_args(argv)
    if a.every <= 0:
        p.error("--every must be > 0 seconds")
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip())
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        p.error(f"unknown format(s) {unknown}; allowed: {', '.join(FORMATS)}")
    if a.watch:
        watch(a.experiment, a.out, formats, a.every)
        return
    print(build_report(a.experiment, a.out, formats))


if __name__ == "__main__":
    main()
