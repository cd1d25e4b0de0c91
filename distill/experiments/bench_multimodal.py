"""``distill bench distill --multimodal``: the paper's table with images, on CPU, tiny VLM.

1. Simulate the scenario in multimodal mode (two study images per case, written to the
   work dir, referenced by URI + sha256), with the text cue turned down (``cue_rate``,
   default 0: only the images tell the answer). The monitor pipeline makes the groups.
2. Split as :mod:`distill.experiments.bench_distill` does; each per-finding group keeps its
   case's image references. The student sees ONE image per question: the finding's band
   of both studies side by side (:func:`stream.simulator.images.finding_pair`), opened by
   reference with the hash checked; a group whose image is missing or changed is dropped
   and counted (``image_failures``).
3. Train the five methods from one tiny LLaVA (:func:`distill.apo.vision_tiny.build_tiny_vlm`),
   every input built by its own processor, the vision tower frozen.
4. For comparison, a text-only student (the tiny causal LM of the text benchmark) trained
   on the same groups without the images (bootstrap and APO drift-weighted): with the cue
   off, its Top-1 shows what the text alone is worth; the gap to the VLM rows is what the
   images add.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.experiments.bench_distill import METHODS, monitor_groups, split, targets
from distill.experiments.students import PREFERENCE_METHODS, Stopwatch, TrainSettings

if TYPE_CHECKING:
    from distill.groups import TeacherGroup

TEXT_ONLY_METHODS = ("bootstrap", "apo_drift")


@dataclass(frozen=True)
class MultimodalSettings:
    scenario: str = "default"
    seed: int = 0
    samples: int = 250
    eval_every: int = 5
    cue_rate: float = 0.0
    positive: str = "consensus"  # or "majority" (distill.experiments.mscxr.positive_labels)
    train: TrainSettings = field(default_factory=lambda: TrainSettings(
        bootstrap_steps=150, stage2_steps=60, sft_batch=32, hidden_size=64))


def _finding(group: TeacherGroup) -> str:
    return group.sample_id.rsplit("/", 1)[1]


def _with_images(train: list[Any], groups: list[Any]) -> list[Any]:
    """Per-finding groups get their case's image references (finding_groups drops them)."""
    images = {g.sample_id: g.images for g in groups}
    return [replace(fg, images=images[fg.sample_id.rsplit("/", 1)[0]]) for fg in train]


def _pair(group: TeacherGroup, studies: list[Any]) -> list[Any]:
    from stream.simulator.images import finding_pair

    return [finding_pair(studies, _finding(group))]


def vision_sft(student_dir: Path, rows: Sequence[tuple[str, Any, str]], out_dir: Path,
               t: TrainSettings, steps: int, lr: float) -> tuple[Path, list[float]]:
    """Response-token NLL on (prompt, image, response) rows; saved dir and losses."""
    from distill.apo.vision import load_vision_student, save_vision_student
    from distill.apo.vision_encode import VisionSFTCollator, encode_vision_pair
    from distill.experiments.students import train_sft

    model, processor = load_vision_student(Path(student_dir), trainable=True)
    cache: dict[Any, Any] = {}
    data = [encode_vision_pair(processor, p, [img], r, t.max_length + 32, cache)
            for p, img, r in rows]
    trained, losses = train_sft(model, data, VisionSFTCollator(processor.tokenizer.pad_token_id),
                                processor.tokenizer, Path(out_dir), t, steps, lr)
    return save_vision_student(trained, processor, Path(out_dir)), losses


def vision_preference_data(reference_dir: Path, items: Sequence[tuple[Any, Any]],
                           positives: Sequence[str], t: TrainSettings) -> dict[str, list[Any]]:
    """Encoded groups per weighting ("uniform", "drift"), reference log-probs attached once."""
    from distill.apo.preference import build_preference_group
    from distill.apo.vision import load_vision_student
    from distill.apo.vision_encode import (
        VisionGroup,
        attach_vision_reference,
        encode_vision_pair,
    )

    reference, processor = load_vision_student(Path(reference_dir))
    cache: dict[Any, Any] = {}
    encoded, drift_weights = [], []
    for (group, images), pos in zip(items, positives, strict=True):
        pref = build_preference_group(group, pos)
        if not pref.negatives:
            continue
        cands = tuple(encode_vision_pair(processor, pref.prompt, images, text,
                                         t.max_length + 32, cache)
                      for text in (pref.positive, *pref.negatives))
        encoded.append(VisionGroup(group.sample_id, cands, pref.weights))
        drift_weights.append(build_preference_group(
            group, pos, weighting="drift", consensus_weight=t.consensus_weight,
            drift_weight_scale=t.drift_weight_scale).weights)
    device = next(reference.parameters()).device
    uniform = attach_vision_reference(encoded, reference, processor.tokenizer.pad_token_id,
                                      64, device)
    drift = [replace(g, weights=tuple(w)) for g, w in zip(uniform, drift_weights, strict=True)]
    return {"uniform": uniform, "drift": drift}


def vision_preference_train(policy_dir: Path, data: dict[str, list[Any]], method: str,
                            out_dir: Path, t: TrainSettings) -> tuple[Path, dict[str, Any]]:
    from transformers import PrinterCallback

    from distill.apo.vision import load_vision_student, save_vision_student
    from distill.apo.vision_encode import VisionAPOTrainer
    from distill.experiments.students import apo_config

    loss_type, weighting = PREFERENCE_METHODS[method]
    model, processor = load_vision_student(Path(policy_dir), trainable=True)
    args = apo_config(Path(out_dir) / "_run", t, loss_type=loss_type, weighting=weighting,
                      learning_rate=t.stage2_lr, max_steps=t.stage2_steps,
                      per_device_train_batch_size=t.groups_per_step, micro_batch_candidates=0)
    trainer = VisionAPOTrainer(model=model, args=copy.deepcopy(args),
                               train_dataset=data[weighting],
                               processing_class=processor.tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    history = {k: list(v) for k, v in trainer.round_history.items()}
    return save_vision_student(trainer.model, processor, Path(out_dir)), history


def vision_scores(model_dir: Path, items: Sequence[tuple[str, str, str, Any]],
                  max_length: int) -> dict[str, dict[str, float]]:
    """Top-1 and sampled accuracy over the three labels, per finding, with the image."""
    from distill.apo.vision import load_vision_student
    from distill.apo.vision_encode import encode_vision_pair, vision_score_all
    from distill.experiments.mscxr import label_text, with_mean
    from stream.simulator import FINDINGS, LABELS

    model, processor = load_vision_student(Path(model_dir))
    cache: dict[Any, Any] = {}
    rows = [encode_vision_pair(processor, p, [img], label_text(lab), max_length, cache)
            for _, p, _, img in items for lab in LABELS]
    flat = vision_score_all(model, rows, processor.tokenizer.pad_token_id, 96,
                            next(model.parameters()).device)
    k = len(LABELS)
    hits = {f: [0.0, 0.0, 0] for f in FINDINGS}
    for i, (finding, _, truth, _) in enumerate(items):
        row = flat[i * k:(i + 1) * k]
        top = max(row)
        probs = [math.exp(v - top) for v in row]
        h = hits[finding]
        h[0] += float(LABELS[row.index(top)] == truth)
        h[1] += probs[LABELS.index(truth)] / sum(probs)
        h[2] += 1
    return {"top1": with_mean({f: h[0] / max(h[2], 1) for f, h in hits.items()}),
            "sampled": with_mean({f: h[1] / max(h[2], 1) for f, h in hits.items()})}


def _text_only(train: list[Any], usable: list[Any], positives: list[str],
               items: list[tuple[str, str, str]], workdir: Path, t: TrainSettings,
               ) -> dict[str, dict[str, float]]:
    """The tiny causal-LM student on the same groups without images (module docstring)."""
    from distill.experiments import students as st
    from distill.experiments.scoring import student_scores

    texts = [g.prompt for g in train] + [a.output for g in train[:2000] for a in g.answers]
    init = st.init_student(workdir / "init", texts, t)
    boot, _ = st.sft(init, [(g.prompt, a.output) for g in train for a in g.answers],
                     workdir / "bootstrap", t, t.bootstrap_steps, t.sft_lr)
    data = st.preference_data(boot, usable, positives, t)
    drift, _ = st.preference_train(boot, data, "apo_drift", workdir / "apo_drift", t)
    return {m: student_scores(d, items, t.max_length)["top1"]
            for m, d in (("bootstrap", boot), ("apo_drift", drift))}


def run(settings: MultimodalSettings, workdir: Path,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole multimodal benchmark for one seed (module docstring)."""
    from distill.apo.vision import load_group_images
    from distill.apo.vision_tiny import build_tiny_vlm
    from distill.experiments.mscxr import (
        ensemble_top1,
        finding_prompts,
        label_text,
        teacher_top1,
    )
    from stream.simulator import FINDINGS, change_points, load_scenario
    from stream.simulator.images import finding_pair, with_cue_rate

    say = progress or (lambda _: None)
    t, workdir = settings.train, Path(workdir)
    clock = Stopwatch()
    scenario = with_cue_rate(load_scenario(settings.scenario).with_samples(settings.samples),
                             settings.cue_rate)
    images_dir = workdir / "images"
    say("simulate + monitor")
    groups, alerts = monitor_groups(scenario, settings.seed, images_dir=images_dir)
    clock.lap("monitor")
    held, train = split(groups, settings.eval_every, settings.positive)
    train = _with_images(train, groups)
    roots = [str(images_dir)]
    loaded, failures = load_group_images(train, roots, _pair)
    held_loaded, held_failures = load_group_images(held, roots)
    failures.update(held_failures)
    truths = [g.ground_truth for g, _ in held_loaded]
    items = [(f, finding_prompts(g.prompt)[f], g.ground_truth[f], finding_pair(imgs, f))
             for g, imgs in held_loaded for f in FINDINGS]
    say("initial VLM")
    texts = [g.prompt or "" for g, _ in loaded] + [a.output for g, _ in loaded[:2000]
                                             for a in g.answers]
    init = build_tiny_vlm(workdir / "vlm-init", texts, hidden_size=t.hidden_size,
                          num_layers=t.num_layers, vocab_size=t.vocab_size, seed=t.seed)
    say("bootstrap")
    boot, boot_loss = vision_sft(init, [(g.prompt or "", imgs[0], a.output) for g, imgs in loaded
                                        for a in g.answers], workdir / "bootstrap", t,
                                 t.bootstrap_steps, t.sft_lr)
    clock.lap("bootstrap")
    dirs, history = {"bootstrap": boot}, {"bootstrap": {"loss": boot_loss}}
    usable = [(g, imgs) for g, imgs in loaded if g.consensus.answer is not None]
    positives = [label_text(answer) for g, _ in usable
                 if (answer := g.consensus.answer) is not None]  # all of them: usable's filter
    say("sft_majority")
    dirs["sft_majority"], loss = vision_sft(
        boot, [(g.prompt or "", imgs[0], p)
               for (g, imgs), p in zip(usable, positives, strict=True)],
        workdir / "sft_majority", t, t.stage2_steps, t.stage2_sft_lr)
    history["sft_majority"] = {"loss": loss}
    clock.lap("sft_majority")
    say("reference log-probs")
    data = vision_preference_data(boot, usable, positives, t)
    clock.lap("reference")
    for method in ("dpo", "apo_uniform", "apo_drift"):
        say(method)
        dirs[method], history[method] = vision_preference_train(boot, data, method,
                                                                workdir / method, t)
        clock.lap(method)
    say("evaluation")
    scores = {m: vision_scores(dirs[m], items, t.max_length + 32) for m in METHODS}
    clock.lap("evaluation")
    say("text-only student")
    text_only = _text_only([g for g, _ in loaded], [g for g, _ in usable], positives,
                           [(f, p, truth) for f, p, truth, _ in items], workdir / "text", t)
    clock.lap("text_only")
    teachers = teacher_top1([g for g, _ in held_loaded], truths)
    return {
        "benchmark": "distill", "multimodal": True, "scenario": scenario.name,
        "seed": settings.seed, "settings": asdict(settings),
        "cases": {"train": len(groups) - len(held), "eval": len(held_loaded),
                  "train_groups": len(loaded), "preference_groups": len(data["uniform"])},
        "image_failures": dict(failures),
        "findings": list(FINDINGS),
        "teachers": teachers,
        "majority_vote": ensemble_top1([g for g, _ in held_loaded], truths, "majority"),
        "methods": {m: scores[m]["top1"] for m in METHODS},
        "methods_sampled": {m: scores[m]["sampled"] for m in METHODS},
        "text_only": text_only,
        "history": history, "alerts": alerts, "change_points": change_points(scenario),
        "seconds": clock.seconds,
        "targets": targets(scores, teachers),
        "uses_images": {"vlm_apo_drift_minus_text_only_apo_drift":
                        scores["apo_drift"]["top1"]["mean"] - text_only["apo_drift"]["mean"],
                        "vlm_bootstrap_minus_text_only_bootstrap":
                        scores["bootstrap"]["top1"]["mean"] - text_only["bootstrap"]["mean"]},
    }
