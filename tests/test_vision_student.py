"""The vision-language student: a tiny LLaVA built offline, its images through its own
processor (hash checked), SFT and APO steps that move the language side only."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")

import torch
from PIL import Image

from distill.apo.student import load_student
from distill.apo.vision import (
    build_tiny_vlm,
    is_vision_student,
    load_group_images,
    load_vision_student,
)
from distill.apo.vision_encode import (
    VisionAPOTrainer,
    VisionGroup,
    attach_vision_reference,
    encode_vision_pair,
    vision_score_all,
)
from distill.experiments.students import TrainSettings, apo_config
from distill.groups import Consensus, TeacherAnswer, TeacherGroup
from stream.images import ImageRef, image_ref

pytestmark = pytest.mark.train
TEXTS = ["edema: edema (see images) -> edema (see images)", "Final answer: improving",
         "Final answer: stable", "Final answer: worsening"] * 4


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "init", TEXTS, hidden_size=32)


def _group(sid: str, refs: tuple[ImageRef, ...]) -> TeacherGroup:
    answers = [TeacherAnswer("a", f"{sid}-a", "Final answer: stable", "stable"),
               TeacherAnswer("b", f"{sid}-b", "Final answer: worsening", "worsening")]
    return TeacherGroup(sid, "edema: edema (see images) -> edema (see images)", "complete",
                        answers, Consensus("stable", 1, False), {}, images=refs)


def test_tiny_vlm_loads_as_a_vision_student(tiny_vlm: Path) -> None:
    assert is_vision_student(tiny_vlm)
    model, processor = load_vision_student(tiny_vlm)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    dark, bright = Image.new("RGB", (32, 8), 40), Image.new("RGB", (32, 8), 220)
    rows = [encode_vision_pair(processor, "edema", [img], "Final answer: stable", 64)
            for img in (dark, bright)]
    assert rows[0].input_ids == rows[1].input_ids  # same text, the pixels differ
    a, b = vision_score_all(model, rows, processor.tokenizer.pad_token_id)
    assert a != pytest.approx(b)  # the image reaches the language model
    text_model, _ = load_student(tiny_vlm)  # the loader's switch takes a VLM directory too
    assert type(text_model).__name__ == "LlavaForConditionalGeneration"


def test_group_images_are_hash_checked_and_failures_counted(tmp_path: Path) -> None:
    root = tmp_path / "img"
    root.mkdir()
    Image.new("L", (16, 40), 100).save(root / "ok.png")
    Image.new("L", (16, 40), 100).save(root / "changed.png")
    ok, changed = image_ref(root / "ok.png", "ok.png"), image_ref(root / "changed.png",
                                                                    "changed.png")
    Image.new("L", (16, 40), 200).save(root / "changed.png")
    groups = [_group("s1", (ok,)), _group("s2", (changed,)),
              _group("s3", (ImageRef("gone.png", ok.sha256),)), _group("s4", ())]
    kept, failed = load_group_images(groups, [str(root)])
    assert [g.sample_id for g, _ in kept] == ["s1", "s4"]
    assert kept[0][1][0].mode == "RGB" and kept[1][1] == []
    assert failed == {"image_hash_mismatch": 1, "image_missing": 1}


@pytest.mark.parametrize("lora", [False, True])
def test_apo_steps_move_the_language_side_and_not_the_vision_tower(
        tiny_vlm: Path, tmp_path: Path, lora: bool) -> None:
    from distill.apo.vision import apply_vision_lora

    model, processor = load_vision_student(tiny_vlm, trainable=True)
    if lora:
        model = apply_vision_lora(model)
    tok = processor.tokenizer
    images = [Image.new("RGB", (32, 8), v) for v in (40, 220)]
    groups = []
    for i, img in enumerate(images):
        cands = tuple(encode_vision_pair(processor, "edema", [img], f"Final answer: {t}", 64)
                      for t in ("stable", "worsening", "improving"))
        groups.append(VisionGroup(f"s{i}", cands, (1.0, 1.0)))
    reference, _ = load_vision_student(tiny_vlm)
    groups = attach_vision_reference(groups, reference, tok.pad_token_id)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = apo_config(tmp_path / "run", TrainSettings(), learning_rate=0.05, max_steps=2,
                      per_device_train_batch_size=2, micro_batch_candidates=0)
    trainer = VisionAPOTrainer(model=model, args=copy.deepcopy(args), train_dataset=groups,
                               processing_class=tok)
    trainer.train()
    assert trainer.round_history["loss/preference"]
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("language_model" in n for n in moved)
    assert not any("vision_tower" in n for n in moved)


def test_bootstrap_and_round_take_images_and_count_a_bad_one(tiny_vlm: Path,
                                                             tmp_path: Path) -> None:
    from distill.apo import bootstrap, train_round

    root = tmp_path / "img"
    root.mkdir()
    groups = []
    for i, level in enumerate((40, 120, 220)):
        Image.new("L", (32, 8), level).save(root / f"{i}.png")
        groups.append(_group(f"s{i}", (image_ref(root / f"{i}.png", f"{i}.png"),)))
    config = apo_config(tmp_path / "run", TrainSettings(), learning_rate=0.01, max_steps=2,
                        per_device_train_batch_size=2, image_roots=[str(root)])
    boot = bootstrap(tiny_vlm, groups, tmp_path / "boot", config)
    assert is_vision_student(boot)
    Image.new("L", (32, 8), 99).save(root / "2.png")  # changed after the event was sent
    result = train_round(boot, boot, groups, tmp_path / "r1", config, progress=False)
    assert result.metrics["image_failures/image_hash_mismatch"] == 1.0
    assert result.metrics["groups"] == 2.0 and result.metrics["steps"] == 2.0
    assert is_vision_student(result.model_dir)
