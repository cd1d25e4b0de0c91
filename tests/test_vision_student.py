"""The vision-language student: tiny LLaVA, Idefics3 (SmolVLM), Qwen2-VL and Qwen2.5-VL
built offline, images through each one's own processor (hash checked), SFT and APO steps
that move the language side only, synthesis and the promotion gate with the case's images,
and the image roots coming from the config's ``serve.image_roots``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("PIL")

import torch
from PIL import Image

from distill.apo.student import load_student
from distill.apo.synthesis import hf_vision_generate_fn
from distill.apo.vision import (
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
from distill.apo.vision_tiny import build_tiny_vlm
from distill.experiments.students import TrainSettings, apo_config
from distill.groups import Consensus, TeacherAnswer, TeacherGroup
from stream.images import ImageRef, image_ref

pytestmark = pytest.mark.train
TEXTS = ["edema: edema (see images) -> edema (see images)", "Final answer: improving",
         "Final answer: stable", "Final answer: worsening"] * 4


#: family -> (model class, a parameter-name part of its language side, of its vision tower)
FAMILIES = {
    "llava": ("LlavaForConditionalGeneration", "language_model", "vision_tower"),
    "idefics3": ("Idefics3ForConditionalGeneration", "text_model", "vision_model"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "language_model", "visual"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "language_model", "visual"),
}


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "init", TEXTS, hidden_size=32)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_vlm(request: pytest.FixtureRequest, tiny_vlm: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family = request.param
    if family == "llava":
        return family, tiny_vlm
    return family, build_tiny_vlm(tmp_path_factory.mktemp(family) / "init", TEXTS,
                                  family=family, hidden_size=32)


def _group(sid: str, refs: tuple[ImageRef, ...]) -> TeacherGroup:
    answers = [TeacherAnswer("a", f"{sid}-a", "Final answer: stable", "stable"),
               TeacherAnswer("b", f"{sid}-b", "Final answer: worsening", "worsening")]
    return TeacherGroup(sid, "edema: edema (see images) -> edema (see images)", "complete",
                        answers, Consensus("stable", 1, False), {}, images=refs)


def test_each_family_loads_scores_with_its_images_and_generates(
        family_vlm: tuple[str, Path]) -> None:
    family, path = family_vlm
    assert is_vision_student(path)
    model, processor = load_vision_student(path)
    assert type(model).__name__ == FAMILIES[family][0]
    dark, bright = Image.new("RGB", (32, 8), 40), Image.new("RGB", (32, 8), 220)
    rows = [encode_vision_pair(processor, "edema", [img], "Final answer: stable", 64)
            for img in (dark, bright)]
    assert rows[0].input_ids == rows[1].input_ids  # same text, the pixels differ
    text_only = encode_vision_pair(processor, "edema", [], "Final answer: stable", 64)
    a, b, _ = vision_score_all(model, [*rows, text_only], processor.tokenizer.pad_token_id)
    assert a != pytest.approx(b)  # the image reaches the language model
    assert len({len(r.input_ids) for r in (*rows, text_only)}) == 2  # image tokens expanded
    outs = hf_vision_generate_fn(model, processor, max_new_tokens=3)(
        ["edema", "no image here", "edema"], [[dark], [], [bright]])
    assert len(outs) == 3 and all(isinstance(o, str) for o in outs)
    if family == "llava":
        text_model, _ = load_student(path)  # the loader's switch takes a VLM directory too
        assert type(text_model).__name__ == FAMILIES[family][0]


def test_a_batch_mixes_cases_with_different_image_counts() -> None:
    from distill.apo.vision_encode import VisionEncoded, collate_vision

    def row(images: dict[str, torch.Tensor], types: tuple[int, ...] | None = None
            ) -> VisionEncoded:
        return VisionEncoded([1, 2, 3, 4], 2, images, types)

    per_row = [row({"pixel_values": torch.ones(1, n, 3, 4, 4),
                    "pixel_attention_mask": torch.ones(1, n, 4, 4, dtype=torch.long)})
               for n in (2, 1)] + [row({})]  # Idefics3 / SmolVLM layout: rows x images
    out = collate_vision(per_row, 0)
    assert out["pixel_values"].shape == (3, 2, 3, 4, 4)
    assert out["pixel_values"][1, 1].abs().sum() == 0 and out["pixel_values"][2].abs().sum() == 0
    assert out["pixel_attention_mask"][:, :, 0, 0].tolist() == [[1, 1], [1, 0], [0, 0]]
    per_image = [row({"pixel_values": torch.ones(n, 3, 4, 4)}, (0, 1)) for n in (2, 1)]
    out = collate_vision([row({}), *per_image], 0)  # LLaVA / Qwen2-VL: one entry per image
    assert out["pixel_values"].shape == (3, 3, 4, 4)
    assert out["mm_token_type_ids"].tolist() == [[0] * 4, [0, 1, 0, 0], [0, 1, 0, 0]]


def test_synthesis_puts_each_case_images_in_the_students_context(tiny_vlm: Path) -> None:
    from distill.apo.vision import IMAGE_TOKEN

    model, processor = load_vision_student(tiny_vlm)
    seen: list[dict[str, torch.Tensor]] = []
    generate = model.generate
    model.generate = lambda **kw: seen.append(kw) or generate(**kw)
    images = [Image.new("RGB", (32, 8), v) for v in (40, 220)]
    hf_vision_generate_fn(model, processor, max_new_tokens=2)(
        ["case one", "no image", "case two"], [[images[0]], [], [images[1]]])
    with_images = [kw for kw in seen if "pixel_values" in kw]
    assert len(seen) == 2 and len(with_images) == 1  # batched by image count
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    per_row = (with_images[0]["input_ids"] == image_id).sum(1).tolist()
    assert with_images[0]["pixel_values"].shape[0] == 2 and per_row[0] == per_row[1] > 0
    pixels = processor(text=["<image>"], images=[[images[1]]], return_tensors="pt")
    assert torch.equal(with_images[0]["pixel_values"][1], pixels["pixel_values"][0])


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
    _apo_steps(tiny_vlm, tmp_path, lora, "language_model", "vision_tower")


def test_a_lora_apo_step_on_each_family(family_vlm: tuple[str, Path], tmp_path: Path) -> None:
    family, path = family_vlm
    if family == "llava":
        pytest.skip("covered with and without LoRA above")
    _, language, vision = FAMILIES[family]
    _apo_steps(path, tmp_path, True, language, vision, steps=1)


def _apo_steps(path: Path, tmp_path: Path, lora: bool, language: str, vision: str,
               steps: int = 2) -> None:
    from distill.apo.vision import apply_vision_lora

    model, processor = load_vision_student(path, trainable=True)
    if lora:
        model = apply_vision_lora(model)
    tok = processor.tokenizer
    images = [Image.new("RGB", (32, 8), v) for v in (40, 220)]
    groups = []
    for i, img in enumerate(images):
        cands = tuple(encode_vision_pair(processor, "edema", [img], f"Final answer: {t}", 64)
                      for t in ("stable", "worsening", "improving"))
        groups.append(VisionGroup(f"s{i}", cands, (1.0, 1.0)))
    reference, _ = load_vision_student(path)
    groups = attach_vision_reference(groups, reference, tok.pad_token_id)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = apo_config(tmp_path / "run", TrainSettings(), learning_rate=0.05, max_steps=steps,
                      per_device_train_batch_size=2, micro_batch_candidates=0)
    trainer = VisionAPOTrainer(model=model, args=copy.deepcopy(args), train_dataset=groups,
                               processing_class=tok)
    trainer.train()
    assert trainer.round_history["loss/preference"]
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(language in n for n in moved)
    assert not any(f".{vision}." in n for n in moved)


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
                        per_device_train_batch_size=2, image_roots=[str(root)],
                        synthesis="generate", synthesis_max_new_tokens=4)
    boot = bootstrap(tiny_vlm, groups, tmp_path / "boot", config)
    assert is_vision_student(boot)
    Image.new("L", (32, 8), 99).save(root / "2.png")  # changed after the event was sent
    stages: list[tuple[str, int, int]] = []
    result = train_round(boot, boot, groups, tmp_path / "r1", config, progress=False,
                         on_batch=lambda stage, done, total: stages.append((stage, done, total)))
    assert ("synthesis", 2, 2) in stages  # the student wrote the readable groups' positives
    assert ("reference", 2, 2) in stages
    assert result.metrics["image_failures/image_hash_mismatch"] == 1.0
    assert result.metrics["groups"] == 2.0 and result.metrics["steps"] == 2.0
    assert 0.0 <= result.metrics["synthesis_fallbacks"] <= 2.0
    assert is_vision_student(result.model_dir)


def test_the_gate_scores_with_the_probe_images_read_under_the_rounds_roots(
        tiny_vlm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.apo import vision_encode
    from distill.trainer.round import ApoEngine, RoundSettings

    root = tmp_path / "img"
    root.mkdir()
    probe = []
    for i, level in enumerate((40, 220, 120)):
        Image.new("L", (32, 8), level).save(root / f"{i}.png")
        probe.append(_group(f"p{i}", (image_ref(root / f"{i}.png", f"{i}.png"),)))
    Image.new("L", (32, 8), 99).save(root / "2.png")
    seen: list[tuple[Any, ...]] = []
    real = vision_encode.encode_vision_pair

    def spy(processor: Any, prompt: str, images: Any, *rest: Any) -> Any:
        seen.append(tuple(i.getpixel((0, 0)) for i in images))
        return real(processor, prompt, images, *rest)

    monkeypatch.setattr(vision_encode, "encode_vision_pair", spy)
    scores = ApoEngine().evaluate(tiny_vlm, probe, RoundSettings(apo={"image_roots": [str(root)]}))
    assert scores["n_probe"] == 2.0 and scores["n_probe_image_failures"] == 1.0
    assert 0.0 <= scores["agreement"] <= 1.0
    assert sorted(set(seen)) == [((40, 40, 40),), ((220, 220, 220),)]  # each case its image
    unread = ApoEngine().evaluate(tiny_vlm, probe, RoundSettings())  # no roots: none readable
    assert unread["n_probe"] == 0.0 and unread["n_probe_image_failures"] == 3.0


def test_the_trainer_reads_images_under_the_configs_serve_image_roots(tmp_path: Path) -> None:
    import click

    from distill.cli.common import settings_or_exit
    from distill.config import load_config
    from distill.trainer.round import ApoEngine

    path = tmp_path / "distill.toml"
    path.write_text('[serve]\nimage_roots = ["/data/cxr", "s3://bucket/cxr"]\n')
    cfg = load_config(path, env={})
    settings = settings_or_exit(cfg, None, None, None, None, False, 5, ())
    config = ApoEngine()._config(tmp_path, settings)
    assert config.image_roots == ["/data/cxr", "s3://bucket/cxr"]
    with pytest.raises(click.BadParameter, match=r"serve\.image_roots"):
        settings_or_exit(cfg, None, None, None, None, False, 5, ('image_roots=["/x"]',))
    from_env = load_config(None, env={"DISTILL_SERVE__IMAGE_ROOTS": "/data/a,s3://b/c"})
    settings = settings_or_exit(from_env, None, None, None, None, False, 5, ())
    assert ApoEngine()._config(tmp_path, settings).image_roots == ["/data/a", "s3://b/c"]
