"""`APOTrainer`: a ``transformers.Trainer`` whose batches are preference groups.

Follows TRL's ``DPOTrainer`` shape (config dataclass + Trainer subclass, one metrics buffer
flushed by ``log()``), so accelerate, DeepSpeed and FSDP launchers work unchanged. What
differs from DPO:

* all 1+N candidates of a step's groups go through the policy in ONE padded batch
  (``micro_batch_candidates=0``), and with ``share_prompt`` (default) the prompt they
  share goes through it once per group, its KV cache copied under every candidate;
* or in micro-batches: a no-grad pass gives every
  candidate's log-prob, the loss's gradient with respect to those log-probs is taken
  exactly, and each micro-batch is re-run with grad and back-propagated against it
  (the same gradient for ``dropout=0``, memory of one micro-batch);
* the reference log-probs come cached with the group (:mod:`distill.apo.data`), so no
  reference model is held or run during training.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer

from distill.apo.config import APOConfig
from distill.apo.data import GroupCollator
from distill.apo.encode import sequence_logps, shared_prompt_logps
from distill.apo.loss import group_loss, reward_stats

_MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "response_mask")


class APOTrainer(Trainer):
    """Trains ``model`` on encoded groups with reference log-probs attached.

    Parameters
    ----------
    model
        The policy (plain or PEFT-wrapped).
    args
        :class:`~distill.apo.config.APOConfig`.
    train_dataset
        A sequence of :class:`~distill.apo.data.EncodedGroup` with ``ref_logps`` set.
    processing_class
        The tokenizer (its ``pad_token_id`` pads the batches).
    """

    # Narrower than Trainer's: __init__ takes only an APOConfig, and a model is required.
    args: APOConfig
    model: torch.nn.Module

    def __init__(self, model: Any, args: APOConfig, train_dataset: Any,
                 processing_class: Any, **kwargs: Any) -> None:
        if not isinstance(args, APOConfig):
            raise TypeError(f"args must be an APOConfig, got {type(args).__name__}")
        self.share_prompt = bool(args.share_prompt and not args.micro_batch_candidates
                                 and not args.gradient_checkpointing)
        kwargs.setdefault("data_collator", GroupCollator(processing_class.pad_token_id,
                                                         share_prompt=self.share_prompt))
        super().__init__(model=model, args=args, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)
        self.loss_is_scaled_for_ga = False
        self._metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list), "eval": defaultdict(list)}
        self.round_history: defaultdict[str, list[float]] = defaultdict(list)
        self.tokens_seen = 0

    # -- loss -------------------------------------------------------------------------
    def _loss_from_logps(self, logps: torch.Tensor, n_tokens: torch.Tensor,
                         inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        args = self.args
        index = inputs["group_index"].clamp_min(0)
        mask = inputs["neg_mask"]
        ref = inputs["ref_logps"].to(logps.dtype)
        pos, neg = logps[index[:, 0]], logps[index[:, 1:]]
        pos_ref, neg_ref = ref[index[:, 0]], ref[index[:, 1:]]
        per_group = group_loss(args.loss_type, pos, pos_ref, neg, neg_ref,
                               inputs["weights"].to(logps.dtype), args.beta, mask)
        loss = per_group.mean()
        stats = reward_stats(pos, pos_ref, neg, neg_ref, args.beta, mask)
        if args.alpha_nll > 0:
            nll = -(pos / n_tokens[index[:, 0]].clamp_min(1)).mean()
            loss = loss + args.alpha_nll * nll
            stats["nll"] = nll.item()
        stats["loss/preference"] = per_group.mean().item()
        return loss, stats

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if "resp_ids" in inputs:
            logps, n_tokens = shared_prompt_logps(model, inputs)
        else:
            logps, n_tokens = sequence_logps(model, {k: inputs[k] for k in _MODEL_KEYS})
        loss, stats = self._loss_from_logps(logps, n_tokens, inputs)
        self._record(stats, inputs)
        return (loss, {"logps": logps}) if return_outputs else loss

    def training_step(self, model: Any, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        micro = self.args.micro_batch_candidates
        if not micro or "resp_ids" in inputs or inputs["input_ids"].shape[0] <= micro:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._micro_batched_step(model, inputs, micro)

    def _micro_batched_step(self, model: Any, inputs: dict[str, Any],
                            micro: int) -> torch.Tensor:
        model.train()
        inputs = self._prepare_inputs(inputs)
        rows = inputs["input_ids"].shape[0]
        chunks = [slice(s, min(s + micro, rows)) for s in range(0, rows, micro)]
        with torch.no_grad(), self.compute_loss_context_manager():
            parts = [sequence_logps(model, _rows(inputs, c)) for c in chunks]
        logps = torch.cat([p[0] for p in parts]).float().requires_grad_(True)
        n_tokens = torch.cat([p[1] for p in parts])
        loss, stats = self._loss_from_logps(logps, n_tokens, inputs)
        (grad,) = torch.autograd.grad(loss, logps)
        scale = getattr(self, "current_gradient_accumulation_steps", 1)
        for c in chunks:
            with self.compute_loss_context_manager():
                chunk_logps, _ = sequence_logps(model, _rows(inputs, c))
                surrogate = (chunk_logps.float() * grad[c]).sum() / scale
            self.accelerator.backward(surrogate)
        self._record(stats, inputs)
        return loss.detach() / scale

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: list[str] | None = None) -> tuple[Any, Any, Any]:
        """Evaluation = the same loss without gradients (batches carry no labels)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # -- metrics ----------------------------------------------------------------------
    def _record(self, stats: dict[str, float], inputs: dict[str, Any]) -> None:
        mode = "train" if self.model.training else "eval"
        if "resp_ids" in inputs:
            tokens = inputs["prompt_mask"].sum() + inputs["resp_mask"].sum()
        else:
            tokens = inputs["attention_mask"].sum()
        tokens = self.accelerator.gather_for_metrics(tokens.reshape(1)).sum().item()
        for key, value in stats.items():
            self._metrics[mode][key].append(value)
        self._metrics[mode]["num_tokens"].append(float(tokens))
        if mode == "train":
            self.tokens_seen += int(tokens)
            for key in ("loss/preference", "rewards/margins", "rewards/accuracies", "nll"):
                if key in stats:  # nll only with alpha_nll > 0
                    self.round_history[key].append(stats[key])

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        if mode == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self._metrics[mode].clear()


def _rows(inputs: dict[str, Any], rows: slice) -> dict[str, Any]:
    """Model inputs of some rows, with the all-padding left columns dropped."""
    part = {k: inputs[k][rows] for k in _MODEL_KEYS}
    used = part["attention_mask"].any(0).nonzero()
    start = int(used[0].item()) if used.numel() else 0
    return {k: v[:, start:] for k, v in part.items()}
