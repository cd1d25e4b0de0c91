"""``distill report``: drift timelines, alerts, training curves and accuracy tables as PNG
figures, plus one self-contained HTML page (the PNGs embedded as base64).

Inputs, all optional, drawn when present:

* a state dir (``distill replay`` or ``serve``): ``timeline.jsonl`` (bank summaries over
  time), ``alerts.jsonl``, ``changepoints.json`` (true change points, when known) and the
  trainer's registry (``trainer/registry/registry.json``: one point per round);
* a benchmark JSON (``distill bench distill`` or ``bench consensus``): the accuracy table,
  the training curves of each method, the monitor's alerts and the scenario's change points.

x axes of drift figures are the teacher's own event index, the unit of alerts
(``DriftRecord.index``) and of change points (``event_index_of_teacher``).
matplotlib runs on the Agg backend: no display is needed.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from detectors.bank import JOINT_KEYS
from distill.statedir import StateDir
from stream.signals import SIGNALS

SIGNALS_DRAWN = (*SIGNALS, *JOINT_KEYS)  # per-signal detectors, then the joint bank's tests
SIGNAL_MARKERS = {"length": "o", "refusal": "s", "format": "D", "agreement": "^",
                  "answer": "v", "vocab": "P", "own": "X", "peer": "*"}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_state_dir(state_dir: Path) -> dict[str, Any]:
    """Everything the figures need from a state dir (missing parts are empty)."""
    layout = StateDir(Path(state_dir))
    cp_path, registry = layout.changepoints, layout.registry_file
    rounds = []
    if registry.is_file():
        data = json.loads(registry.read_text())
        rounds = [{"version": k, **v} for k, v in sorted(data.get("versions", {}).items())]
    return {"timeline": _read_jsonl(layout.timeline),
            "alerts": _read_jsonl(layout.alerts),
            "change_points": json.loads(cp_path.read_text()) if cp_path.is_file() else [],
            "rounds": rounds}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(teachers: Iterable[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10")
    return {t: cmap(i % 10) for i, t in enumerate(sorted(teachers))}


def _change_lines(ax: Any, change_points: list[dict[str, Any]], colors: dict[str, Any],
                  label: bool = True) -> None:
    for cp in change_points:
        x = cp.get("event_index_of_teacher", cp.get("sample_index"))
        if x is None:
            continue
        ax.axvline(x, color=colors.get(cp["teacher"], "grey"), linestyle="--", linewidth=1,
                   alpha=0.8)
        if label:
            ax.annotate(f"{cp['teacher']}: {cp.get('kind', 'change')}", (x, 1.0),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=6,
                        va="top", ha="right", color="dimgrey")


def plot_signals(timeline: list[dict[str, Any]], alerts: list[dict[str, Any]],
                 change_points: list[dict[str, Any]], out: Path) -> Path | None:
    """One panel per signal: each teacher's estimate over its events, alerts as markers on
    the line, true change points as dashed lines in the teacher's colour."""
    if not timeline:
        return None
    plt = _plt()
    teachers = sorted({t for snap in timeline for t in snap["summary"]})
    colors = _colors(teachers)
    signals = [s for s in SIGNALS_DRAWN
               if any(s in snap["summary"].get(t, {}) for snap in timeline for t in teachers)]
    fig, axes = plt.subplots(len(signals), 1, figsize=(11, 2.1 * len(signals) + 0.8),
                             sharex=True, squeeze=False)
    for ax, signal in zip(axes[:, 0], signals, strict=True):
        for t in teachers:
            pts = [(_events_of(snap["summary"][t]), snap["summary"][t][signal]["estimate"])
                   for snap in timeline if signal in snap["summary"].get(t, {})]
            pts = [(x, y) for x, y in pts if y is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=colors[t], linewidth=1.2, label=t)
            for a in alerts:
                if a["teacher"] == t and a["signal"] == signal:
                    ax.plot(a["index"], _nearest(pts, a["index"]), marker="v", markersize=9,
                            color=colors[t], markeredgecolor="black")
        _change_lines(ax, change_points, colors, label=ax is axes[0, 0])
        ax.set_ylabel(signal, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title("Per-teacher signal estimates (▼ drift alert, -- true change point)",
                         fontsize=11)
    axes[-1, 0].set_xlabel("teacher's event index")
    axes[0, 0].legend(fontsize=7, ncol=min(len(teachers), 7), loc="lower left",
                      bbox_to_anchor=(0, 1.12), frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def _events_of(signals: dict[str, Any]) -> int:
    """The teacher's event count (``agreement`` updates only when a group closes)."""
    return max(v.get("n") or 0 for k, v in signals.items() if k != "agreement")


def _nearest(pts: Sequence[tuple[float, float]], x: float) -> float:
    return min(pts, key=lambda p: abs(p[0] - x))[1]


def plot_alerts(alerts: list[dict[str, Any]], change_points: list[dict[str, Any]],
                out: Path, teachers: Iterable[str] = ()) -> Path | None:
    """One row per teacher: alerts by signal (marker shape), true change points as bars."""
    names = sorted(set(teachers) | {a["teacher"] for a in alerts}
                   | {c["teacher"] for c in change_points})
    if not names:
        return None
    plt = _plt()
    colors = _colors(names)
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(names) + 1.6))
    row = {t: i for i, t in enumerate(names)}
    for cp in change_points:
        x = cp.get("event_index_of_teacher", cp.get("sample_index"))
        ax.plot([x, x], [row[cp["teacher"]] - 0.4, row[cp["teacher"]] + 0.4], color="red",
                linewidth=2.5, alpha=0.6)
    seen: set[str] = set()
    for a in alerts:
        sig = a["signal"]
        ax.scatter(a["index"], row[a["teacher"]], marker=SIGNAL_MARKERS.get(sig, "o"), s=60,
                   color=colors[a["teacher"]], edgecolor="black", zorder=3,
                   label=sig if sig not in seen else None)
        seen.add(sig)
    ax.plot([], [], color="red", linewidth=2.5, alpha=0.6, label="true change point")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(left=0)
    ax.set_xlabel("teacher's event index")
    ax.set_title(f"Drift alerts ({len(alerts)}) by teacher and signal", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return _save(fig, out)


def plot_rounds(rounds: list[dict[str, Any]], out: Path) -> Path | None:
    """The trainer's rounds from its registry: loss, reward margin and eval score."""
    pts = [r for r in rounds if r.get("metrics")]
    if not pts:
        return None
    plt = _plt()
    panels = (("loss", ("loss",)), ("reward margin", ("reward_margin",)),
              ("eval score", ("eval_accuracy", "eval_agreement", "eval_top1/mean")))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    xs = list(range(1, len(pts) + 1))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            ys = [r["metrics"].get(key) for r in pts]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o",
                        label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round (registry version)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Training rounds", fontsize=11)
    fig.tight_layout()
    return _save(fig, out)


def plot_training(history: dict[str, dict[str, list[float]]], final: dict[str, float],
                  out: Path) -> Path | None:
    """Benchmark curves: loss per logged step per method, APO/DPO reward margins, and the
    held-out Top-1 mean per method."""
    if not history:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for method, h in history.items():
        loss = h.get("loss") or h.get("loss/preference")
        if loss:
            axes[0].plot(range(1, len(loss) + 1), loss, label=method)
        margins = h.get("rewards/margins")
        if margins:
            axes[1].plot(range(1, len(margins) + 1), _smooth(margins), label=method)
    axes[0].set_title("training loss (per logged step)", fontsize=10)
    axes[0].set_yscale("log")
    axes[1].set_title("reward margin r+ - max r_u (smoothed)", fontsize=10)
    names = list(final)
    axes[2].barh(names, [final[m] for m in names], color="tab:blue")
    for i, m in enumerate(names):
        axes[2].text(final[m], i, f" {final[m]:.3f}", va="center", fontsize=8)
    axes[2].set_xlim(0, 1.1)
    axes[2].set_title("held-out Top-1 mean (eval score)", fontsize=10)
    for ax in axes[:2]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def _smooth(xs: list[float], k: int = 10) -> list[float]:
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1])
            for i in range(len(xs))]


def plot_heatmap(rows: list[tuple[str, dict[str, float]]], columns: list[str], title: str,
                 out: Path) -> Path | None:
    """An annotated accuracy heat map (rows: teachers and methods; columns: metrics)."""
    if not rows:
        return None
    plt = _plt()
    grid = [[r.get(c, float("nan")) if r.get(c) is not None else float("nan")
             for c in columns] for _, r in rows]
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 4.5, 0.42 * len(rows) + 1.4))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            if v == v:  # not NaN
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), columns, fontsize=8, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _plt().close(fig)
    return out


def bench_figures(result: dict[str, Any], out_dir: Path, suffix: str = "") -> list[Path]:
    """Figures of a ``bench distill`` or ``bench consensus`` JSON (several seeds: one set
    per run, named ``*_seedN.png``)."""
    if "runs" in result:
        return [p for run in result["runs"]
                for p in bench_figures(run, out_dir, f"_seed{run['seed']}")]
    made: list[Path | None] = []
    if result.get("benchmark") == "consensus":
        rows = [(f"{r['task']}: {r['chain']}"[:60], r) for r in result["rows"]]
        made.append(plot_heatmap(rows, ["majority", "drift_aware", "best_teacher"],
                                 "Consensus accuracy per chain", out_dir / "accuracy.png"))
        return [p for p in made if p]
    from distill.experiments.bench_distill import METHODS, table_rows

    cols = [*result["findings"], "mean"]
    title = f"Top-1 per finding: {result['scenario']} (seed {result['seed']})"
    made.append(plot_heatmap(table_rows(result), cols, title,
                             out_dir / f"accuracy{suffix}.png"))
    made.append(plot_training(result.get("history", {}),
                              {m: result["methods"][m]["mean"] for m in METHODS},
                              out_dir / f"training{suffix}.png"))
    made.append(plot_alerts(result.get("alerts", []), result.get("change_points", []),
                            out_dir / f"alerts{suffix}.png", result["teachers"]))
    return [p for p in made if p]


def state_figures(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """Figures of a state dir."""
    made = [plot_signals(data["timeline"], data["alerts"], data["change_points"],
                         out_dir / "signals.png"),
            plot_alerts(data["alerts"], data["change_points"], out_dir / "alerts.png",
                        {t for s in data["timeline"] for t in s["summary"]}),
            plot_rounds(data["rounds"], out_dir / "rounds.png")]
    return [p for p in made if p]


def write_html(figures: list[Path], out: Path, title: str, notes: dict[str, Any]) -> Path:
    """One self-contained page: every figure inline as base64, and the notes as a table."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "img{max-width:100%;border:1px solid #ddd;margin:1em 0}"
             "td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    if notes:
        parts.append("<table>")
        parts += [f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                  for k, v in notes.items()]
        parts.append("</table>")
    for fig in figures:
        data = base64.b64encode(fig.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(fig.stem)}</h2>"
                     f"<img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>")
    out.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return out


def make_report(out_dir: Path, state_dir: Path | None = None,
                bench_json: Path | None = None) -> dict[str, Any]:
    """Draw everything available; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    notes: dict[str, Any] = {}
    if state_dir is not None:
        data = load_state_dir(state_dir)
        figures += state_figures(data, out_dir)
        notes.update({"state dir": str(state_dir), "alerts": len(data["alerts"]),
                      "snapshots": len(data["timeline"]), "rounds": len(data["rounds"])})
    if bench_json is not None:
        result = json.loads(Path(bench_json).read_text())
        figures += bench_figures(result, out_dir)
        notes.update(_bench_notes(result))
    page = write_html(figures, out_dir / "index.html", "drift-distill report", notes)
    return {"figures": [str(p) for p in figures], "html": str(page)}


def _bench_notes(result: dict[str, Any]) -> dict[str, Any]:
    if "runs" in result:
        return {f"seed {r['seed']} {k}": v for r in result["runs"]
                for k, v in _bench_notes(r).items() if k != "seed"}
    if result.get("benchmark") == "consensus":
        return {f"consensus {k}": v for k, v in result["aggregate"].items()}
    notes = {"scenario": result["scenario"], "seed": result["seed"]}
    notes.update({f"target {k}": v for k, v in result.get("targets", {}).get("met", {}).items()})
    return notes
