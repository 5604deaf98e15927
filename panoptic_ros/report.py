"""The evaluation report: ``report.md`` with PNG plots, and ``report.json``.

Plots (matplotlib's object API with the Agg canvas: no global pyplot state,
no display needed):

- ``per_class_pq.png``: PQ of every class that occurs, in the class colour,
  things and stuff apart, with SQ and RQ marked;
- ``id_timeline.png``: per ground-truth object (rows) and frame (columns),
  the predicted id it was matched to, one colour per predicted id; pale red
  where it was visible but matched to nothing, hatched grey where it was
  fully hidden; a colour change along a row is an ID switch;
- ``latency_hist.png``: per-frame processing latency with p50 and p99;
- ``recall_by_area.png``: the share of ground-truth segments found (matched),
  by segment area, per thing class in its colour, all things and all stuff;
- ``confusion.png``: the semantic confusion matrix, each ground-truth class's
  pixels (rows) by the class they were predicted as (columns, void last), in
  percent of the row: what a class is mistaken for.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from panoptic_ros.evaluate import Comparison, EvaluationReport, IdTimeline
    from panoptic_ros.metrics.pq import AreaRow

PQ_PLOT = "per_class_pq.png"
TIMELINE_PLOT = "id_timeline.png"
LATENCY_PLOT = "latency_hist.png"
AREA_PLOT = "recall_by_area.png"
CONFUSION_PLOT = "confusion.png"
TIMELINE_SEQUENCES = 3  # sequences drawn in the ID timeline
TIMELINE_TRACKS = 30  # ground-truth objects per sequence, the longest-visible first
_MISSED_RGB = (0.98, 0.75, 0.75)
_HIDDEN_RGB = (0.75, 0.75, 0.75)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100.0 * v:.1f}"


def _count(v: int | None) -> str:
    return "n/a" if v is None else str(v)


# --------------------------------------------------------------------------- plots


def plot_per_class_pq(report: "EvaluationReport", path: Path) -> Path:
    from matplotlib.figure import Figure

    rows = [r for r in report.pq.per_class if r.tp + r.fp + r.fn > 0]
    rows.sort(key=lambda r: (not r.is_thing, r.class_id))
    fig = Figure(figsize=(7.0, 0.35 * max(len(rows), 3) + 1.2), dpi=110)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    colors = [tuple(c / 255.0 for c in report.classes.classes[r.class_id].color_rgb) for r in rows]
    ax.barh(y, [r.pq for r in rows], color=colors, edgecolor="black", linewidth=0.5, label="PQ")
    ax.scatter([r.sq for r in rows], y, marker="|", s=120, color="black", label="SQ", zorder=3)
    ax.scatter([r.rq for r in rows], y, marker="x", s=30, color="dimgray", label="RQ", zorder=3)
    for yi, r in zip(y, rows):
        ax.text(1.04, yi, f"{100 * r.pq:5.1f}  TP {r.tp} FP {r.fp} FN {r.fn}", va="center", fontsize=7)
    ax.set_yticks(y, [f"{r.name}{' *' if r.is_thing else ''}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.45)
    ax.set_xticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel("quality (0..1)")
    ax.set_title(f"Per-class PQ: all {_pct(report.pq.all.pq)}, things* {_pct(report.pq.things.pq)}, "
                 f"stuff {_pct(report.pq.stuff.pq)}", fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=7, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    return path


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, length, value) of each run of equal values."""
    out = []
    start = 0
    for k in range(1, len(values) + 1):
        if k == len(values) or values[k] != values[start]:
            out.append((start, k - start, int(values[start])))
            start = k
    return out


def _id_colors(timelines: list["IdTimeline"]) -> dict[tuple[str, int], tuple[float, float, float]]:
    """A colour per (sequence, predicted id), in order of first appearance, cycling a qualitative palette."""
    from matplotlib import colormaps

    palette = [colormaps["tab20"](i)[:3] for i in range(20)] + [colormaps["Dark2"](i)[:3] for i in range(8)]
    colors: dict[tuple[str, int], tuple[float, float, float]] = {}
    for tl in timelines:
        n = 0
        for h in tl.hyp_ids.T.ravel():
            if h and (tl.sequence, int(h)) not in colors:
                colors[(tl.sequence, int(h))] = palette[n % len(palette)]
                n += 1
    return colors


def _timeline_rows(tl: "IdTimeline") -> list[int]:
    seen = (tl.state != 0).sum(axis=1)
    order = sorted(range(len(tl.gt_ids)), key=lambda i: (-int(seen[i]), tl.gt_ids[i]))[:TIMELINE_TRACKS]
    first = [int(np.flatnonzero(tl.state[i])[0]) if seen[i] else 0 for i in order]
    return [i for _, i in sorted(zip(first, order))]


def plot_id_timeline(report: "EvaluationReport", path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    timelines = [s.timeline for s in report.sequences if s.timeline.gt_ids][:TIMELINE_SEQUENCES]
    heights = [max(len(_timeline_rows(tl)), 1) for tl in timelines] or [1]
    fig = Figure(figsize=(9.0, 0.22 * sum(heights) + 1.2 * len(heights) + 0.6), dpi=110)
    if not timelines:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no ground-truth objects", ha="center", va="center")
        ax.set_axis_off()
        fig.savefig(path)
        return path
    colors = _id_colors(timelines)
    axes = fig.subplots(len(timelines), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, tl in zip(axes, timelines):
        rows = _timeline_rows(tl)
        for y, i in enumerate(rows):
            state, hyp = tl.state[i], tl.hyp_ids[i]
            code = np.where(state == tl.VISIBLE, np.where(hyp > 0, hyp, -1), np.where(state == tl.HIDDEN, -2, 0))
            for start, length, value in _runs(code):
                if value == 0:
                    continue
                if value == -2:
                    ax.broken_barh([(start, length)], (y - 0.4, 0.8), facecolors=_HIDDEN_RGB, hatch="///",
                                   edgecolor="gray", linewidth=0)
                elif value == -1:
                    ax.broken_barh([(start, length)], (y - 0.4, 0.8), facecolors=_MISSED_RGB)
                else:
                    ax.broken_barh([(start, length)], (y - 0.4, 0.8), facecolors=colors[(tl.sequence, value)])
                    if length >= 3:
                        ax.text(start + length / 2, y, str(value), ha="center", va="center", fontsize=6)
        ax.set_yticks(range(len(rows)), [f"gt {tl.gt_ids[i]}" for i in rows], fontsize=6)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, tl.state.shape[1])
        ax.set_xlabel("frame", fontsize=8)
        ax.set_title(f"{tl.sequence}: predicted id per ground-truth object (colour change = ID switch)", fontsize=9)
    fig.legend(handles=[Patch(facecolor=_MISSED_RGB, label="visible, matched to no prediction"),
                        Patch(facecolor=_HIDDEN_RGB, hatch="///", label="fully hidden"),
                        Patch(facecolor="white", edgecolor="gray", label="not in view")],
               loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path)
    return path


def plot_latency(report: "EvaluationReport", path: Path) -> Path:
    from matplotlib.figure import Figure

    values = np.asarray(report.latencies_ms, dtype=np.float64)
    fig = Figure(figsize=(7.0, 3.2), dpi=110)
    ax = fig.add_subplot()
    ax.hist(values, bins=min(40, max(5, values.size // 3)), color="steelblue", edgecolor="white")
    for q, style in ((50, "-"), (99, "--")):
        v = float(np.percentile(values, q))
        ax.axvline(v, color="black", linestyle=style, linewidth=1, label=f"p{q} {v:.1f} ms")
    ax.set_xlabel("processing latency per frame (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"Latency over {values.size} frames", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_recall_by_area(report: "EvaluationReport", path: Path) -> Path:
    from matplotlib.figure import Figure

    from panoptic_ros.metrics.pq import area_bin_labels

    area = report.pq.by_area
    labels = area_bin_labels()
    x = np.arange(len(labels))
    fig = Figure(figsize=(7.0, 4.0), dpi=110)
    ax = fig.add_subplot()

    def line(row: "AreaRow", **style) -> None:
        ax.plot(x, row.recall, marker="o", **style)

    for info in report.classes.classes:
        row = area.per_class.get(info.name)
        if info.is_thing and row is not None and sum(row.gt):
            line(row, color=tuple(c / 255.0 for c in info.color_rgb), linewidth=1, markersize=3,
                 label=f"{info.name} ({sum(row.gt)})")
    for name, row, style in (("things", area.things, {"color": "black", "linewidth": 2.5}),
                             ("stuff", area.stuff, {"color": "dimgray", "linewidth": 2, "linestyle": "--"})):
        line(row, label=f"all {name} ({sum(row.gt)})", **style)
    for xi, n in zip(x, area.things.gt):
        ax.text(xi, 1.03, f"n={n}", ha="center", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("ground-truth segment area (px)")
    ax.set_ylabel("recall (segments matched, IoU > 0.5)")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3)
    ax.set_title("Recall by segment area (n = thing segments per bin)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_confusion(report: "EvaluationReport", path: Path) -> Path:
    """Row-normalised semantic confusion over the classes present in the ground truth (rows) or predicted."""
    from matplotlib.figure import Figure

    miou = report.pq.miou
    conf = miou.confusion  # (C, C + 1): ground truth x (prediction, void)
    rows = [i for i in range(conf.shape[0]) if conf[i].sum() > 0]
    cols = [j for j in range(conf.shape[0]) if j in rows or conf[:, j].sum() > 0] + [conf.shape[1] - 1]
    share = miou.shares()[np.ix_(rows, cols)]
    names = report.classes.names
    fig = Figure(figsize=(1.6 + 0.42 * len(cols), 1.4 + 0.36 * len(rows)), dpi=110)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for (r, c), v in np.ndenumerate(share):
        if v >= 0.01:
            ax.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.6 else "black")
    ax.set_xticks(range(len(cols)), [names[j] for j in cols[:-1]] + ["void"],
                  rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [names[i] for i in rows], fontsize=7)
    ax.set_xlabel("predicted as")
    ax.set_ylabel("ground truth")
    ax.set_title(f"Semantic confusion, % of each ground-truth class's pixels (mIoU {_pct(miou.miou)})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- markdown


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _area_section(report: "EvaluationReport", plots: dict[str, Path]) -> list[str]:
    """Recall by ground-truth segment area, per class and group, and false positives by their area."""
    from panoptic_ros.metrics.pq import area_bin_labels

    area = report.pq.by_area
    if area is None or AREA_PLOT not in plots:
        return []

    def cells(row: "AreaRow") -> list[str]:
        return [f"{_pct(r)} ({g})" if g else "-" for r, g in zip(row.recall, row.gt)]

    rows = [[c.name, *cells(area.per_class[c.name])] for c in report.classes.classes
            if c.is_thing and c.name in area.per_class and sum(area.per_class[c.name].gt)]
    rows += [["**all things**", *cells(area.things)], ["**all stuff**", *cells(area.stuff)]]
    labels = area_bin_labels()
    lines = ["", "### Recall by segment area", "", f"![recall by area]({plots[AREA_PLOT].name})", "",
             "Share of ground-truth segments matched (IoU > 0.5), in %, with the number of segments, by the "
             "segment's area in pixels (crowd left out):", ""]
    lines += _table(["class", *labels], rows)
    lines += ["", "False positives by their own area:", ""]
    lines += _table(["", *labels], [[name, *(str(v) for v in row.fp)] for name, row in (("things", area.things),
                                                                                         ("stuff", area.stuff))])
    return lines


def report_markdown(report: "EvaluationReport", plots: dict[str, Path], comparison: "Comparison | None") -> str:
    s = report.summary()
    t = report.tracking
    lines = ["# Panoptic tracking evaluation", "", f"- predictions: `{report.pred}`", f"- ground truth: `{report.gt}`",
             f"- {len(report.sequences)} sequence(s), {s['frames']} frame(s), {s['frames_without_prediction']} "
             "without prediction (scored as empty unless --skip-missing)", ""]
    if report.failures:
        lines += ["**Inputs that could not be evaluated:**", ""] + [f"- {f}" for f in report.failures] + [""]
    lines += ["## Summary", ""]
    lines += _table(["PQ", "SQ", "RQ", "PQ things", "PQ stuff", "mIoU", "VPQ", "STQ", "IDF1", "HOTA", "MOTA",
                     "ID switches"],
                    [[_pct(s["pq"]), _pct(s["sq"]), _pct(s["rq"]), _pct(s["pq_things"]), _pct(s["pq_stuff"]),
                      _pct(s["miou"]), _pct(s["vpq"]), _pct(s["stq"]), _pct(s["idf1"]), _pct(s["hota"]),
                      _pct(s["mota"]), _count(s["id_switches"])]], align="r" * 12)
    if report.pq_interval is not None:
        from panoptic_ros.evaluate import interval_text
        lines += ["", interval_text(report.pq_interval) + ": resampling the sequences with replacement moves PQ "
                  "this much, so smaller differences between runs on these data are noise."]
    if report.untracked:
        from panoptic_ros.evaluate import UNTRACKED_NOTE
        lines += ["", UNTRACKED_NOTE + "."]
    if comparison is not None:
        lines += ["", "## Comparison", "", comparison.to_markdown().rstrip()]
    lines += ["", "## Panoptic quality per class", "", f"![per-class PQ]({plots[PQ_PLOT].name})", ""]
    miou = report.pq.miou
    rows = []
    for r in report.pq.per_class:
        if r.tp + r.fp + r.fn == 0 and (miou is None or not math.isfinite(miou.iou[r.class_id])):
            continue
        rows.append([r.name, "thing" if r.is_thing else "stuff", _pct(r.pq), _pct(r.sq), _pct(r.rq), str(r.tp),
                     str(r.fp), str(r.fn), _pct(miou.iou[r.class_id]) if miou is not None else "n/a"])
    lines += _table(["class", "kind", "PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU"], rows, "llrrrrrrr")
    if CONFUSION_PLOT in plots:
        lines += ["", f"![semantic confusion]({plots[CONFUSION_PLOT].name})"]
        top = miou.top_confusions()  # the plot exists only where mIoU does
        if top:
            lines += ["", "Largest confusions (share of the ground-truth class's pixels):", ""]
            lines += _table(["ground truth", "predicted as", "share"], [[g, p, _pct(v)] for g, p, v in top], "llr")
    lines += _area_section(report, plots)
    lines += ["", "VPQ per window size (frames):", ""]
    lines += _table(["window", "VPQ", "things", "stuff", "windows"],
                    [[str(k), _pct(r.all.pq), _pct(r.things.pq), _pct(r.stuff.pq), str(r.num_images)]
                     for k, r in zip(report.vpq.window_sizes, report.vpq.per_window)])
    lines += ["", f"STQ {_pct(report.stq.stq)} (AQ {_pct(report.stq.aq)}, SQ {_pct(report.stq.sq)})", ""]
    lines += ["## Tracking", "", f"![ID timeline]({plots[TIMELINE_PLOT].name})", ""]
    c, i, h = t.clear, t.identity, t.hota
    lines += _table(["HOTA", "DetA", "AssA", "MOTA", "MOTP", "IDF1", "IDP", "IDR", "ID switches", "FP", "FN",
                     "GT objects"],
                    [[_pct(h.hota), _pct(h.det_a), _pct(h.ass_a), _pct(c.mota), _pct(c.motp_iou), _pct(i.idf1),
                      _pct(i.idp), _pct(i.idr), str(c.num_switches), str(c.num_false_positives), str(c.num_misses),
                      str(c.num_objects)]], align="r" * 12)
    lines.append("")
    if report.events is None:
        lines += ["The ground truth does not say which objects are hidden: no occlusion events.", ""]
    else:
        e = report.events
        lines += [f"Full-occlusion events: {e.num_events} ({e.num_kept} kept their id, {e.num_switches} switched, "
                  f"{e.num_lost} lost, {e.num_untracked_before} not tracked before); keep rate {_pct(e.keep_rate)} %.",
                  ""]
        events = [(sq.name, o) for sq in report.sequences for o in (sq.events.outcomes if sq.events else ())]
        if events:
            lines += _table(["sequence", "object", "hidden frames", "outcome", "id before", "id after"],
                            [[n, str(o.event.track_id), f"{o.event.start_frame}..{o.event.end_frame}", o.outcome,
                              str(o.hyp_before or "-"), str(o.hyp_after or "-")] for n, o in events[:50]], "lrllrr")
            lines.append("")
    lines += ["## Latency", ""]
    if LATENCY_PLOT in plots:
        lat = np.asarray(report.latencies_ms)
        lines += [f"![latency]({plots[LATENCY_PLOT].name})", "",
                  f"{lat.size} frames: mean {lat.mean():.1f} ms, p50 {np.percentile(lat, 50):.1f} ms, "
                  f"p90 {np.percentile(lat, 90):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms.",
                  ""]
    else:
        lines += ["No latency recorded with the predictions.", ""]
    if report.components_ms:
        lines += ["Stages (replay timings.json, mean per frame):", ""]
        lines += _table(["stage", "mean ms", "p99 ms"],
                        [[k.removesuffix("_ms"), f"{np.mean(v):.2f}", f"{np.percentile(v, 99):.2f}"]
                         for k, v in sorted(report.components_ms.items()) if v], "lrr")
        lines.append("")
    lines += ["## Sequences", ""]
    lines += _table(["sequence", "frames", "no prediction", "PQ", "IDF1", "HOTA", "ID switches"],
                    [[d["name"], str(d["frames"]), str(d["frames_without_prediction"]), _pct(d["pq"]), _pct(d["idf1"]),
                      _pct(d["hota"]), _count(d["id_switches"])] for d in (report.sequence_summary(q) for q in
                                                                       report.sequences)])
    return "\n".join(lines) + "\n"


def write_report(report: "EvaluationReport", out_dir: Path, comparison: "Comparison | None" = None) -> list[Path]:
    """Write report.md, report.json, the PNG plots and (with a comparison) compare.md; returns the main files."""
    from panoptic_ros.evaluate import COMPARE_MD, REPORT_JSON, REPORT_MD

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {PQ_PLOT: plot_per_class_pq(report, out_dir / PQ_PLOT),
             TIMELINE_PLOT: plot_id_timeline(report, out_dir / TIMELINE_PLOT)}
    if report.latencies_ms:
        plots[LATENCY_PLOT] = plot_latency(report, out_dir / LATENCY_PLOT)
    if report.pq.by_area is not None:
        plots[AREA_PLOT] = plot_recall_by_area(report, out_dir / AREA_PLOT)
    if report.pq.miou is not None and report.pq.miou.confusion.any():
        plots[CONFUSION_PLOT] = plot_confusion(report, out_dir / CONFUSION_PLOT)
    doc = report.to_dict()
    if comparison is not None:
        doc["comparison"] = comparison.to_dict()
        (out_dir / COMPARE_MD).write_text("# Comparison\n\n" + comparison.to_markdown())
    (out_dir / REPORT_JSON).write_text(json.dumps(doc, indent=1))
    (out_dir / REPORT_MD).write_text(report_markdown(report, plots, comparison))
    return [out_dir / REPORT_MD, out_dir / REPORT_JSON]


__all__ = ["AREA_PLOT", "CONFUSION_PLOT", "LATENCY_PLOT", "PQ_PLOT", "TIMELINE_PLOT", "plot_confusion",
           "plot_id_timeline", "plot_latency", "plot_per_class_pq", "plot_recall_by_area", "report_markdown",
           "write_report"]
