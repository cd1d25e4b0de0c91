"""What ``distill bench distill`` and ``distill bench consensus`` do once their options are
parsed: run, print rich tables, write the JSON (the click wiring is in distill/cli/bench.py)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from distill.experiments.bench_distill import METHODS

SMOLLM2_CPU_SAMPLES = 100
"""Cases per scenario with the SmolLM2 student on a CPU (the evaluation scores every held-out
case with every method's model), unless --samples says otherwise."""


def _console() -> Console:
    """A console; when output is not a terminal (a log file), wide enough for the table."""
    console = Console()
    return console if console.is_terminal else Console(width=150)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def distill_table(result: dict[str, Any], key: str = "methods", title: str = "") -> Table:
    from distill.experiments.bench_distill import table_rows

    cols = [*result["findings"], "mean"]
    table = Table(title=title or f"{result['scenario']} (seed {result['seed']}): Top-1 per "
                                 "finding on held-out cases")
    table.add_column("teacher / method")
    for c in cols:
        table.add_column(c, justify="right")
    n_teachers = len(result["teachers"])
    for i, (name, row) in enumerate(table_rows(result, key)):
        table.add_row(name, *(_fmt(row.get(c)) for c in cols),
                      end_section=i in (n_teachers - 1, n_teachers))
    return table


def run_distill(scenario: str, seeds: tuple[int, ...], json_out: Path | None,
                workdir: Path | None, samples: int | None, eval_every: int,
                bootstrap_steps: int | None, stage2_steps: int | None,
                student: str = "tiny", budget: str | None = None) -> list[dict[str, Any]]:
    """Run the benchmark for each seed, print the tables, write the JSON."""

    from distill.experiments.bench_distill import BenchSettings, run
    from distill.experiments.students import (
        TrainSettings,
        smollm2_gpu_settings,
        smollm2_settings,
    )

    console = _console()
    results = []
    steps = {k: v for k, v in (("bootstrap_steps", bootstrap_steps),
                               ("stage2_steps", stage2_steps)) if v is not None}
    preset: Any = TrainSettings
    if student == "smollm2":
        if budget is None:
            import torch

            budget = "gpu" if torch.cuda.is_available() else "cpu"
        preset = smollm2_gpu_settings if budget == "gpu" else smollm2_settings
        if budget == "cpu":
            samples = samples or SMOLLM2_CPU_SAMPLES
    for seed in seeds:
        train = preset(seed=seed, **steps)
        settings = BenchSettings(scenario=scenario, seed=seed, samples=samples,
                                 eval_every=eval_every, train=train)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp, \
                console.status(f"seed {seed}") as status:
            base = Path(workdir) / f"seed{seed}" if workdir else Path(tmp)
            result = run(settings, base,
                         progress=lambda s, n=seed: status.update(f"seed {n}: {s}"))
        result["seconds"]["total"] = round(time.perf_counter() - started, 1)
        console.print(distill_table(result))
        console.print(distill_table(result, "methods_sampled",
                                    "Sampled answer (expected accuracy at temperature 1)"))
        _print_targets(console, result)
        results.append(result)
    if json_out is not None:
        doc: Any = results[0] if len(results) == 1 else {"benchmark": "distill",
                                                         "runs": results}
        _write(json_out, doc)
        console.print(f"wrote {json_out}")
    return results


def _print_targets(console: Console, result: dict[str, Any]) -> None:
    t = result["targets"]
    console.print(
        f"APO drift-weighted mean - best teacher ({t['best_teacher']}) = "
        f"{t['apo_drift_minus_best_teacher']:+.3f} (target +0.03); - bootstrap = "
        f"{t['apo_drift_minus_bootstrap']:+.3f} (target +0.10); - uniform = "
        f"{t['apo_drift_minus_uniform']:+.3f} (target >= 0); "
        f"{result['seconds']['total']} s")


def run_consensus(data: Path, chains: Path, seed: int, scale: float,
                  json_out: Path | None) -> dict[str, Any]:
    from distill.experiments.consensus import run

    console = _console()
    with console.status("chains") as status:
        result = run(data, chains, seed, scale, progress=lambda s: status.update(s))
    table = Table(title="Consensus accuracy per chain (drift stream: watched teacher + peers)")
    for col in ("task", "chain", "groups", "majority", "drift-aware", "best teacher",
                "alerts"):
        table.add_column(col, justify="right" if col not in ("task", "chain") else "left")
    for r in result["rows"]:
        table.add_row(r["task"], r["chain"], str(r["groups"]), _fmt(r["majority"]),
                      _fmt(r["drift_aware"]),
                      f"{_fmt(r['best_teacher'])} {r['best_teacher_name']}", str(r["alerts"]))
    console.print(table)
    a = result["aggregate"]
    console.print(f"{a['chains']} chains, {a['groups']} groups. Mean over chains: majority "
                  f"{_fmt(a['majority_mean'])}, drift-aware {_fmt(a['drift_aware_mean'])}, "
                  f"best single teacher (hindsight) {_fmt(a['best_teacher_mean'])}; "
                  f"drift-aware better on {a['drift_aware_wins']}, worse on "
                  f"{a['drift_aware_losses']}")
    for s in result["skipped"]:
        console.print(f"skipped {s['chain']}: {s['reason']}")
    if json_out is not None:
        _write(json_out, result)
        console.print(f"wrote {json_out}")
    return result


def _write(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


__all__ = ["METHODS", "distill_table", "run_consensus", "run_distill"]
