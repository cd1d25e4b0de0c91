"""Seconds per preference group of a LoRA APO step, and per synthesis prompt, for each tiny
vision-language family (:mod:`distill.apo.vision_tiny`), with LLaVA as the baseline of the
ratio, all in one process on the same groups and images.

Each family is built offline at the same width (hidden 64, 2 + 2 layers, 16 px images),
so the figures compare the code paths (processor, image tokens, rope) rather than model
sizes; a real student's cost is dominated by its size and is not measured here (no GPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_vlm_families.py
    .venv/bin/python benchmarks/bench_vlm_families.py --repeats 3 --json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

TEXTS = ["edema: edema (see images) -> edema (see images)", "Final answer: improving",
         "Final answer: stable", "Final answer: worsening"] * 4
LABELS = ("stable", "worsening", "improving")


def _images(n: int) -> list[Any]:
    from PIL import Image

    return [Image.new("RGB", (32, 8), 20 + 200 * i // max(n - 1, 1)) for i in range(n)]


def measure(family: str, workdir: Path, groups: int, steps: int, seed: int) -> dict[str, float]:
    """One family: build, then time the reference pass, APO steps and synthesis."""
    from transformers.utils import logging as hf_logging

    from distill.apo.synthesis import hf_vision_generate_fn
    from distill.apo.vision import apply_vision_lora, load_vision_student
    from distill.apo.vision_encode import (
        VisionAPOTrainer,
        VisionGroup,
        attach_vision_reference,
        encode_vision_pair,
    )
    from distill.apo.vision_tiny import build_tiny_vlm
    from distill.experiments.students import TrainSettings, apo_config

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    path = build_tiny_vlm(workdir / family, TEXTS, family=family, seed=seed)
    build_s = time.perf_counter() - started
    model, processor = load_vision_student(path, trainable=True)
    reference, _ = load_vision_student(path)
    images = _images(groups)
    data = [VisionGroup(f"s{i}", tuple(encode_vision_pair(processor, "edema", [img],
                                                          f"Final answer: {t}", 64)
                                       for t in LABELS), (1.0, 1.0))
            for i, img in enumerate(images)]
    t0 = time.perf_counter()
    data = attach_vision_reference(data, reference, processor.tokenizer.pad_token_id)
    reference_s = (time.perf_counter() - t0) / groups
    t0 = time.perf_counter()
    hf_vision_generate_fn(reference, processor, 16)(["edema"] * groups, [[i] for i in images])
    synth_s = (time.perf_counter() - t0) / groups
    model = apply_vision_lora(model)
    args = apo_config(workdir / f"{family}-run", TrainSettings(), max_steps=1 + steps,
                      per_device_train_batch_size=1, micro_batch_candidates=0, lora=True)
    trainer = VisionAPOTrainer(model=model, args=copy.deepcopy(args), train_dataset=data,
                               processing_class=processor.tokenizer)
    trainer.remove_callback(PrinterCallback)
    times: list[float] = []
    trainer.add_callback(_StepTimer(times))
    trainer.train()
    return {"build_s": build_s, "reference_s_per_group": reference_s,
            "apo_s_per_group": statistics.median(times[1:]), "synthesis_s_per_prompt": synth_s}


class _StepTimer(TrainerCallback):
    """Wall time of each optimizer step."""

    def __init__(self, out: list[float]) -> None:
        self.out, self.t = out, 0.0

    def on_step_begin(self, *a: Any, **k: Any) -> None:
        self.t = time.perf_counter()

    def on_step_end(self, *a: Any, **k: Any) -> None:
        self.out.append(time.perf_counter() - self.t)


def main() -> None:
    from distill.apo.vision_tiny import TINY_VLM_FAMILIES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=8, help="groups (one image each)")
    ap.add_argument("--steps", type=int, default=4, help="timed APO steps (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=1, help="seeds per family")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, list[dict[str, float]]] = {f: [] for f in TINY_VLM_FAMILIES}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.repeats):
            for family in TINY_VLM_FAMILIES:
                results[family].append(measure(family, Path(tmp) / str(seed), args.groups,
                                               args.steps, seed))
    summary = {f: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for f, runs in results.items()}
    base = summary["llava"]
    for f, row in summary.items():
        row["apo_ratio_vs_llava"] = row["apo_s_per_group"] / base["apo_s_per_group"]
        row["spread_apo_s"] = (max(r["apo_s_per_group"] for r in results[f])
                               - min(r["apo_s_per_group"] for r in results[f]))
    if args.json:
        print(json.dumps({"groups": args.groups, "steps": args.steps, "repeats": args.repeats,
                          "families": summary}, indent=2))
        return
    print(f"{'family':<12} {'APO s/group':>12} {'vs LLaVA':>9} {'ref s/group':>12} "
          f"{'synth s/prompt':>15} {'build s':>8}")
    for f, r in summary.items():
        print(f"{f:<12} {r['apo_s_per_group']:>12.3f} {r['apo_ratio_vs_llava']:>9.2f} "
              f"{r['reference_s_per_group']:>12.3f} {r['synthesis_s_per_prompt']:>15.3f} "
              f"{r['build_s']:>8.2f}")


if __name__ == "__main__":
    main()
