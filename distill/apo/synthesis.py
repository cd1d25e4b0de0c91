"""Consensus synthesis: the student reads all N teacher trajectories and writes one.

A synthesised trajectory is kept only when its final answer (``stream.answers``) is the
group's consensus (every consensus label, for structured answers:
:meth:`distill.groups.Consensus.agrees`). Otherwise the positive falls back to the best-supported
teacher trajectory, and the fallback is counted: a high fallback rate says the student
cannot yet write consensus answers (early rounds, tiny models) and APO is then learning
"prefer the most agreed-upon teacher", which is still ground-truth free.

Best-supported teacher: among teachers whose answer agrees most with the consensus (the
answer itself, or the most consensus labels for structured answers; all teachers if none
agrees at all), the one with the least drift evidence, then the highest mean word overlap
with the other trajectories, then the first in the group.

Examples
--------
>>> from distill.groups import Consensus, DriftState, TeacherAnswer, TeacherGroup
>>> g = TeacherGroup("s1", "Is 7 prime?", "complete",
...     [TeacherAnswer("a", "e1", "7 is odd. Final answer: yes", "yes"),
...      TeacherAnswer("b", "e2", "7 = 7*1 so prime. Final answer: yes", "yes"),
...      TeacherAnswer("c", "e3", "Final answer: no", "no")],
...     Consensus("yes", 2, False),
...     {"a": DriftState(0.9, True), "b": DriftState(0.0, False), "c": DriftState(0.0, False)})
>>> best_supported(g).teacher
'b'
>>> choose_positive(g, "I think... Final answer: no")
('7 = 7*1 so prime. Final answer: yes', True)
>>> choose_positive(g, "Both agree. Final answer: yes")
('Both agree. Final answer: yes', False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from distill.groups import TeacherAnswer, TeacherGroup
from stream.answers import extract_answer

GenerateFn = Callable[[list[str]], list[str]]
#: A vision-language student's generation: the prompts and, per prompt, its case's images.
VisionGenerateFn = Callable[[list[str], list[Sequence[Any]]], list[str]]


@dataclass(frozen=True, slots=True)
class Synthesis:
    positive: str
    fallback: bool


def _words(text: str) -> set[str]:
    return set(text.lower().split())


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def best_supported(group: TeacherGroup) -> TeacherAnswer:
    """The teacher trajectory that the most other evidence supports (module docstring)."""
    agreement = {a.event_id: group.consensus.agreement(a.answer, a.labels)
                 for a in group.answers}
    top = max(agreement.values(), default=0.0)
    pool = [a for a in group.answers if top > 0 and agreement[a.event_id] == top]
    pool = pool or list(group.answers)
    words = {a.event_id: _words(a.output) for a in group.answers}

    def support(a: TeacherAnswer) -> tuple[float, float]:
        state = group.drift.get(a.teacher)
        others = [_overlap(words[a.event_id], words[b.event_id])
                  for b in group.answers if b.event_id != a.event_id]
        return (state.evidence if state else 0.0,
                -(sum(others) / len(others) if others else 0.0))

    return min(pool, key=support)


def choose_positive(group: TeacherGroup, candidate: str | None) -> tuple[str, bool]:
    """Keep ``candidate`` if its final answer is the consensus, else fall back."""
    if candidate and group.consensus.agrees(extract_answer(candidate)):
        return candidate, False
    return best_supported(group).output, True


def synthesis_prompt(group: TeacherGroup, template: str, trajectory_template: str,
                     max_chars: int) -> str:
    """The context the student synthesises from: the question and every trajectory."""
    parts = [trajectory_template.format(index=i + 1, teacher=f"{i + 1}",
                                        output=a.output[:max_chars])
             for i, a in enumerate(group.answers)]
    return template.format(prompt=group.prompt or "", trajectories="\n".join(parts))


def synthesize(groups: Sequence[TeacherGroup], generate: GenerateFn | VisionGenerateFn | None,
               *, template: str, trajectory_template: str, max_chars: int = 2000,
               batch_size: int = 8, on_batch: Callable[[int, int], None] | None = None,
               images: Sequence[Sequence[Any]] | None = None) -> list[Synthesis]:
    """One positive per group. ``generate=None`` skips the student (``best_teacher`` mode).

    ``on_batch(done, total)`` runs after each generated batch (progress; it may raise to
    abandon the synthesis, e.g. on a stop request). ``images`` (one list per group) makes
    ``generate`` a :data:`VisionGenerateFn`: each case's images go into its context.
    """
    if images is not None and len(images) != len(groups):
        raise ValueError(f"images: one list per group expected, got {len(images)} for "
                         f"{len(groups)} groups")
    if generate is None:
        return [Synthesis(*choose_positive(g, None)) for g in groups]
    out: list[Synthesis] = []
    if on_batch is not None and groups:
        on_batch(0, len(groups))
    for start in range(0, len(groups), batch_size):
        chunk = groups[start:start + batch_size]
        prompts = [synthesis_prompt(g, template, trajectory_template, max_chars) for g in chunk]
        if images is None:
            texts = cast(GenerateFn, generate)(prompts)
        else:
            texts = cast(VisionGenerateFn, generate)(prompts,
                                                     list(images[start:start + batch_size]))
        out.extend(Synthesis(*choose_positive(g, t)) for g, t in zip(chunk, texts, strict=True))
        if on_batch is not None:
            on_batch(len(out), len(groups))
    return out


def hf_generate_fn(model: Any, tokenizer: Any, max_new_tokens: int,
                   max_prompt_tokens: int) -> GenerateFn:
    """Greedy, batched, left-padded generation with the student's chat template."""
    import torch

    from distill.apo.encode import prompt_ids

    def generate(prompts: list[str]) -> list[str]:
        rows = [prompt_ids(tokenizer, p)[-max_prompt_tokens:] for p in prompts]
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        model.train(was_training)
        texts: list[str] = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
        return texts

    return generate


def hf_vision_generate_fn(model: Any, processor: Any, max_new_tokens: int) -> VisionGenerateFn:
    """Greedy generation of a vision-language student, each case's images in its context.

    The prompt goes through the student's processor (chat template with one image part per
    image, image tokens expanded), left-padded; prompts with the same number of images are
    batched together (some families cannot mix counts in one batch). The prompt is never
    cut (that could drop image tokens): ``synthesis_max_chars_per_teacher`` bounds it.
    """
    import torch

    from distill.apo.vision_encode import vision_prompt

    tok = processor.tokenizer

    def run(prompts: list[str], images: list[Sequence[Any]]) -> list[str]:
        side, tok.padding_side = tok.padding_side, "left"
        try:
            inputs = processor(
                text=[vision_prompt(processor, p, imgs) for p, imgs in zip(prompts, images,
                                                                           strict=True)],
                images=[list(i) for i in images] if images[0] else None, padding=True,
                return_tensors="pt")
        finally:
            tok.padding_side = side
        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items() if k != "token_type_ids"}
        width = inputs["input_ids"].shape[1]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            gen = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        model.train(was_training)
        texts: list[str] = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
        return texts

    def generate(prompts: list[str], images: list[Sequence[Any]]) -> list[str]:
        out = [""] * len(prompts)
        by_count: dict[int, list[int]] = {}
        for i, imgs in enumerate(images):
            by_count.setdefault(len(imgs), []).append(i)
        for rows in by_count.values():
            texts = run([prompts[i] for i in rows], [images[i] for i in rows])
            for i, text in zip(rows, texts, strict=True):
                out[i] = text
        return out

    return generate
