"""Bootstrap, APOTrainer and train_round on tiny real models (CPU, a few steps, large lr)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from toy_groups import parity_groups
from transformers import AutoModelForCausalLM

from distill.apo import APOConfig, APOTrainer, bootstrap, evaluate, train_round
from distill.apo.bootstrap import sft_pairs
from distill.apo.data import GroupCollator, attach_reference, encode_groups
from distill.apo.encode import encode_pair, score_all
from distill.apo.preference import build_preference_group
from distill.apo.refcache import ReferenceCache, model_identity
from distill.apo.student import apply_lora, load_student
from distill.apo.tiny import build_tiny_student
from distill.apo.training import make_preference_groups
from distill.groups import Consensus, DriftState, TeacherAnswer, TeacherGroup

pytestmark = pytest.mark.train


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared 2-core box they contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def groups() -> list[TeacherGroup]:
    return parity_groups(6, n_teachers=7, n_drifted=2, seed=1)


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, groups: list[TeacherGroup]) -> Path:
    texts = [g.prompt or "" for g in groups] + [a.output for g in groups for a in g.answers]
    return build_tiny_student(tmp_path_factory.mktemp("tiny"), texts, seed=0)


def _config(tmp: Path, **kw: object) -> APOConfig:
    base: dict[str, object] = dict(output_dir=str(tmp / "hf"), max_steps=6, learning_rate=0.05,
                                   synthesis="best_teacher", seed=0, max_length=96,
                                   max_prompt_length=32, per_device_train_batch_size=2)
    base.update(kw)
    return APOConfig(**base)


def _mean_nll(model_dir: Path, pairs: list[tuple[str, str]]) -> float:
    model, tok = load_student(model_dir)
    enc = [encode_pair(tok, p, r, 96, 32) for p, r in pairs]
    total = sum(score_all(model, enc, tok.pad_token_id))
    return -total / sum(e.response_len for e in enc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, student: Path,
              groups: list[TeacherGroup]) -> Path:
    tmp = tmp_path_factory.mktemp("boot")
    return bootstrap(student, groups, tmp / "ref",
                     _config(tmp, lora=False, max_steps=15, learning_rate=0.01,
                             per_device_train_batch_size=8))


def test_bootstrap_lowers_nll_and_saves_a_plain_model(student: Path, reference: Path,
                                                      groups: list[TeacherGroup]) -> None:
    pairs = sft_pairs(groups)
    assert _mean_nll(reference, pairs) < 0.8 * _mean_nll(student, pairs)
    assert (reference / "model.safetensors").exists()
    assert not (reference / "adapter_config.json").exists()


def test_uniform_apo_raises_positive_margin_over_every_negative(
        tmp_path: Path, reference: Path, groups: list[TeacherGroup]) -> None:
    # A consistent toy preference: one consensus style is preferred over every teacher's.
    config = _config(tmp_path, max_steps=8, learning_rate=0.01)
    model, tok = load_student(reference)
    prefs = [build_preference_group(g, f"Most experts agree. Final answer: {g.consensus.answer}")
             for g in groups]
    encoded = attach_reference(encode_groups(prefs, tok, 96, 32), model, tok.pad_token_id)
    assert config.weighting == "uniform" and all(set(p.weights) == {1.0} for p in prefs)
    trainer = APOTrainer(model=apply_lora(model), args=config, train_dataset=encoded,
                         processing_class=tok)
    trainer.train()
    margins = []
    for g in encoded:
        logps = score_all(trainer.model, list(g.candidates), tok.pad_token_id)
        r = [0.1 * (a - b) for a, b in zip(logps, g.ref_logps, strict=True)]
        margins.append(r[0] - max(r[1:]))
    assert min(margins) > 0, margins
    logged = [h for h in trainer.state.log_history if "rewards/margins" in h]
    assert logged and logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]
    evaluated = trainer.evaluate(encoded)
    assert evaluated["eval_rewards/accuracies"] == 1.0 and evaluated["eval_loss"] > 0


@pytest.mark.parametrize(("loss_type", "extra"), [
    ("apo", {}),
    ("dpo_pairwise", {"gradient_checkpointing": True}),
])
def test_train_round_writes_loadable_safetensors_model_and_logs_loss(
        tmp_path: Path, reference: Path, groups: list[TeacherGroup], loss_type: str,
        extra: dict) -> None:
    config = _config(tmp_path, loss_type=loss_type, weighting="drift", synthesis="generate",
                     synthesis_max_new_tokens=6, max_steps=3, **extra)
    result = train_round(reference, reference, groups, tmp_path / "round", config,
                         progress=False)
    assert result.model_dir == tmp_path / "round"
    assert (result.model_dir / "model.safetensors").exists()
    assert not (result.model_dir / "adapter_model.safetensors").exists()
    m = result.metrics
    assert m["steps"] == 3 and m["groups"] == len(groups)
    assert 0 <= m["synthesis_fallbacks"] <= len(groups)
    assert m["loss"] > 0 and all(math.isfinite(v) for v in m.values())
    assert m["tokens_per_s"] > 0 and m["seconds"] > 0
    new = AutoModelForCausalLM.from_pretrained(result.model_dir)
    old = AutoModelForCausalLM.from_pretrained(reference)
    changed = [n for (n, p), q in zip(new.named_parameters(), old.parameters(), strict=True)
               if not torch.equal(p, q)]
    assert changed  # LoRA deltas merged into the saved weights


def test_shared_prompt_and_micro_batches_give_the_one_batch_gradient(
        tmp_path: Path, reference: Path, groups: list[TeacherGroup]) -> None:
    config = _config(tmp_path, lora=False, alpha_nll=0.5, weighting="drift")
    model, tok = load_student(reference)
    prefs = make_preference_groups(groups, config)
    encoded = attach_reference(encode_groups(prefs, tok, 96, 32), model, tok.pad_token_id)
    flat = [c for g in encoded[:2] for c in g.candidates]
    refs = [x for g in encoded[:2] for x in g.ref_logps]
    assert refs == pytest.approx(score_all(model, flat, tok.pad_token_id), abs=1e-4)
    trainer = APOTrainer(model=model, args=config, train_dataset=encoded, processing_class=tok)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    full = GroupCollator(tok.pad_token_id)(encoded[:2])
    shared = GroupCollator(tok.pad_token_id, share_prompt=True)(encoded[:2])
    results = []
    for micro, batch in ((0, full), (3, full), (0, shared)):
        model.zero_grad()
        trainer.args.micro_batch_candidates = micro
        loss = trainer.training_step(model, dict(batch))
        results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        for a, b in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_reference_cache_lets_a_replayed_group_skip_the_reference_pass(
        tmp_path: Path, reference: Path, groups: list[TeacherGroup]) -> None:
    config = _config(tmp_path, max_steps=1, reference_cache=str(tmp_path / "ref.sqlite"))
    first = train_round(reference, reference, groups, tmp_path / "r1", config, progress=False)
    second = train_round(tmp_path / "r1", reference, groups, tmp_path / "r2", config,
                         progress=False)
    candidates = sum(1 + len(p.negatives) for p in make_preference_groups(groups, config))
    assert first.metrics["reference_cache_hits"] == 0
    assert second.metrics["reference_cache_hits"] == candidates
    model, tok = load_student(reference)
    encoded = encode_groups(make_preference_groups(groups, config), tok, 96, 32)
    cached = attach_reference(encoded, model, tok.pad_token_id,
                              cache=ReferenceCache(tmp_path / "ref.sqlite",
                                                   model_identity(reference)))
    fresh = attach_reference(encoded, model, tok.pad_token_id)
    assert [g.ref_logps for g in cached] == [g.ref_logps for g in fresh]


def _finding_groups(n: int) -> list[TeacherGroup]:
    out = []
    for i in range(n):
        answers = [TeacherAnswer(f"t{t}", f"e{i}{t}",
                                 f"Case {i}. The edema is {v}. Final answer: edema={v}",
                                 f"edema={v}", {"edema": v})
                   for t, v in enumerate(["stable"] * 5 + ["worsening"] * 2)]
        out.append(TeacherGroup(f"c{i}", f"Case {i}: grade the edema.", "complete", answers,
                                Consensus("edema=stable", 5, False),
                                {a.teacher: DriftState(0.0, False) for a in answers},
                                ground_truth={"edema": "stable"}))
    return out


def test_evaluate_scores_consensus_agreement_and_per_finding_top1(tmp_path: Path) -> None:
    probe = _finding_groups(4)
    texts = [g.prompt or "" for g in probe] + [a.output for g in probe for a in g.answers]
    student = build_tiny_student(tmp_path / "s", texts, seed=1)
    trained = bootstrap(student, probe, tmp_path / "b",
                        _config(tmp_path, lora=False, max_steps=12, learning_rate=0.01,
                                per_device_train_batch_size=7))
    scores = evaluate(trained, probe, with_gold=True)
    assert scores["agreement"] == 1.0 and scores["agreement/edema"] == 1.0
    assert scores["top1/edema"] == 1.0 and scores["top1/mean"] == 1.0
    assert scores["n_probe"] == 4
    gate_view = evaluate(trained, probe)  # what the promotion gate sees: no gold columns
    assert gate_view["agreement"] == 1.0
    assert not any(k == "accuracy" or k.startswith("top1") for k in gate_view)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"loss_type": "ipo"}, "loss_type"),
    ({"weighting": "by_magic"}, "weighting"),
    ({"synthesis": "dream"}, "synthesis"),
    ({"beta": 0.0}, "beta"),
    ({"consensus_weight": 1.5}, "consensus_weight"),
    ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"max_length": 64, "max_prompt_length": 64}, "max_prompt_length"),
    ({"remove_unused_columns": True}, "remove_unused_columns"),
    ({"synthesis_template": "no placeholders"}, "synthesis_template"),
])
def test_config_rejects_bad_values_naming_the_field(tmp_path: Path, kwargs: dict,
                                                    field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}:"):
        APOConfig(output_dir=str(tmp_path), **kwargs)


def test_config_fields_carry_help_for_cli_and_yaml() -> None:
    from dataclasses import fields

    own = {f.name: f for f in fields(APOConfig)}
    for name in ("loss_type", "beta", "alpha_nll", "weighting", "consensus_weight",
                 "drift_weight_scale", "lora", "lora_r", "lora_alpha", "max_length"):
        assert own[name].metadata.get("help"), name
    assert json.dumps(APOConfig(output_dir="x").to_dict()["loss_type"]) == '"apo"'
