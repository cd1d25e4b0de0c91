"""Time per preference group: our APO (1 positive over N=7 negatives, one padded batch,
reference log-probs cached once) against TRL's DPOTrainer on the pairwise expansion of the
same groups (7 pairs per group, one group's pairs per step, reference run in the step),
with the same model, the same tokens budget and the same process.

Both sides train the full model (no LoRA), fp32, no gradient checkpointing, one group per
optimiser step; the first ``--warmup`` steps are not timed. APO's per-group time includes
its share of the one-off reference pass. A second baseline lets TRL precompute the
reference log-probs too (``precompute_ref_log_probs=True``, its pass also amortised).

    .venv/bin/python benchmarks/bench_apo.py            # prints a table and the ratio
    .venv/bin/python benchmarks/bench_apo.py --json     # one JSON object

Target (issue 5): APO / TRL-DPO <= 0.6 per group at N=7.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the toy groups fixture


def preference_groups(groups: list) -> list:
    """1 positive + all 7 teacher negatives per group. The positive stands in for a
    synthesised consensus trajectory (the best-supported teacher's, re-headed), so no
    negative coincides with it and N stays 7."""
    from distill.apo.preference import build_preference_group
    from distill.apo.synthesis import best_supported

    return [build_preference_group(g, "Consensus of the experts.\n" + best_supported(g).output)
            for g in groups]


def _timer_callback() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self._t = clock()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.steps.append(clock() - self._t)

    return StepTimer()


def clock() -> float:
    """CPU seconds of this process on a CPU run (immune to other processes' load on a
    shared box; use --threads 1 so it equals compute), wall seconds after a CUDA sync on
    a GPU run."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _steady(steps: list[float], warmup: int) -> float:
    timed = steps[warmup:] or steps
    return statistics.median(timed)


def run_apo(model_dir: Path, groups: list, opts: argparse.Namespace, tmp: Path) -> dict:
    from distill.apo import APOConfig, APOTrainer
    from distill.apo.data import attach_reference, encode_groups
    from distill.apo.student import load_student

    cfg = APOConfig(output_dir=str(tmp / "apo"), max_steps=opts.steps, lora=False, bf16=False,
                    synthesis="best_teacher", learning_rate=1e-5, max_length=opts.max_length,
                    max_prompt_length=opts.max_prompt_length, per_device_train_batch_size=1,
                    disable_tqdm=True, logging_steps=10_000, seed=0,
                    micro_batch_candidates=opts.micro_batch)
    model, tok = load_student(model_dir)
    reference, _ = load_student(model_dir)
    prefs = preference_groups(groups)
    encoded = encode_groups(prefs, tok, cfg.max_length, cfg.max_prompt_length)
    t0 = clock()
    encoded = attach_reference(encoded, reference, tok.pad_token_id, cfg.reference_batch_size)
    ref_seconds = clock() - t0
    timer = _timer_callback()
    trainer = APOTrainer(model=model, args=cfg, train_dataset=encoded, processing_class=tok,
                         callbacks=[timer])
    trainer.train()
    step = _steady(timer.steps, opts.warmup)
    tokens = sum(len(c.input_ids) for g in encoded for c in g.candidates) / len(encoded)
    return {"step_s": step, "ref_s_per_group": ref_seconds / len(encoded),
            "per_group_s": step + ref_seconds / len(encoded), "tokens_per_group": tokens,
            "negatives": statistics.mean(len(g.candidates) - 1 for g in encoded)}


def _pairs(prefs: list) -> list[dict]:
    rows = []
    for p in prefs:
        for neg in p.negatives:
            rows.append({"prompt": [{"role": "user", "content": p.prompt}],
                         "chosen": [{"role": "assistant", "content": p.positive}],
                         "rejected": [{"role": "assistant", "content": neg}]})
    return rows


def run_trl(model_dir: Path, groups: list, opts: argparse.Namespace, tmp: Path,
            precompute: bool, plain_setup_s: float = 0.0) -> dict:
    """TRL's DPOTrainer; with ``precompute`` its reference pass (in the constructor) is the
    constructor's extra time over the plain run's (``plain_setup_s``), amortised."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from distill.apo.student import load_student

    prefs = preference_groups(groups)
    n_neg = len(prefs[0].negatives)
    data = Dataset.from_list(_pairs(prefs))
    cfg = DPOConfig(output_dir=str(tmp / "dpo"), max_steps=opts.steps, bf16=False,
                    gradient_checkpointing=False, learning_rate=1e-5, beta=0.1,
                    loss_type=["sigmoid"], max_length=opts.max_length,
                    per_device_train_batch_size=n_neg, report_to="none", disable_tqdm=True,
                    logging_steps=10_000, save_strategy="no", seed=0,
                    precompute_ref_log_probs=precompute, precompute_ref_batch_size=16)
    model, tok = load_student(model_dir)
    reference, _ = load_student(model_dir)
    timer = _timer_callback()
    t0 = clock()
    trainer = DPOTrainer(model=model, ref_model=reference, args=cfg, train_dataset=data,
                         processing_class=tok, callbacks=[timer])
    setup = clock() - t0
    trainer.train()
    step = _steady(timer.steps, opts.warmup)
    ref_share = max(setup - plain_setup_s, 0.0) / len(prefs) if precompute else 0.0
    return {"step_s": step, "ref_s_per_group": ref_share, "per_group_s": step + ref_share,
            "pairs_per_group": n_neg, "setup_s": setup}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="groups (= optimiser steps) per side")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--max-length", type=int, default=1024,
                    help="large enough that neither side truncates: identical tokens")
    ap.add_argument("--max-prompt-length", type=int, default=512)
    ap.add_argument("--micro-batch", type=int, default=0, help="APO candidates per forward")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: steadier timings on a shared CPU); 0 = default")
    ap.add_argument("--no-precompute-baseline", action="store_true")
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args(argv)

    import torch
    from toy_groups import simulated_groups

    from distill.apo.tiny import TinySpec, build_tiny_student

    if opts.threads:
        torch.set_num_threads(opts.threads)
    groups = simulated_groups(opts.steps)
    texts = [g.prompt or "" for g in groups] + [a.output for g in groups for a in g.answers]
    spec = TinySpec(arch="qwen2", vocab_size=opts.vocab, hidden_size=opts.hidden,
                    num_layers=opts.layers, num_heads=4, num_kv_heads=2,
                    intermediate_size=2 * opts.hidden)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = build_tiny_student(tmp / "student", texts, spec)
        params = sum(p.numel() for p in
                     __import__("transformers").AutoModelForCausalLM.from_pretrained(
                         model_dir).parameters())
        apo = run_apo(model_dir, groups, opts, tmp)
        trl = run_trl(model_dir, groups, opts, tmp, precompute=False)
        trl_pre = None if opts.no_precompute_baseline else run_trl(model_dir, groups, opts, tmp,
                                                                     True, trl["setup_s"])
    result = {"clock": "wall (cuda)" if torch.cuda.is_available() else "process cpu",
              "params": params, "groups": len(groups), "negatives": apo["negatives"],
              "threads": torch.get_num_threads(), "apo": apo, "trl_dpo": trl,
              "ratio": apo["per_group_s"] / trl["per_group_s"]}
    if trl_pre is not None:
        result["trl_dpo_precomputed"] = trl_pre
        result["ratio_vs_precomputed"] = apo["per_group_s"] / trl_pre["per_group_s"]
    _print(result, opts.json)
    return result


def _print(r: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, indent=2))
        return
    print(f"model: {r['params'] / 1e6:.2f}M params, {r['groups']} groups, "
          f"N={r['negatives']:.0f} negatives, {r['threads']} torch threads, "
          f"{r['clock']} seconds")
    print(f"{'trainer':<28}{'step s':>9}{'ref s/grp':>11}{'s/group':>9}")
    rows = [("APO (ours, 1 batch of 1+N)", r["apo"]), ("TRL DPOTrainer, 7 pairs", r["trl_dpo"])]
    if "trl_dpo_precomputed" in r:
        rows.append(("TRL DPO, precomputed ref", r["trl_dpo_precomputed"]))
    for name, x in rows:
        print(f"{name:<28}{x['step_s']:>9.3f}{x['ref_s_per_group']:>11.3f}"
              f"{x['per_group_s']:>9.3f}")
    print(f"ratio APO / TRL-DPO: {r['ratio']:.2f} (target <= 0.6)")
    if "ratio_vs_precomputed" in r:
        print(f"ratio APO / TRL-DPO with precomputed reference: {r['ratio_vs_precomputed']:.2f}")


if __name__ == "__main__":
    main()
