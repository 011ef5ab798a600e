"""Evaluation during training: every ``eval.every`` steps, score a few generated samples on the synthetic world;
every ``eval.heldout_every`` steps, the loss on a dataset the run never trains on (:class:`HeldoutLoss`).

The evaluator builds a :class:`~videopoet.trainer.generation.Generator` once (the dataset's tokenizers and
clip geometry, or ``eval.video_tokenizer`` / ``eval.audio_tokenizer``) and, at each evaluation, gives it
the live weights of the training state and runs :func:`videopoet.trainer.evaluate.evaluate_model` on
``eval.samples`` scenes per split (seen and held-out colour x shape combinations) for ``eval.tasks``.
The figures go into that step's metrics row under ``eval`` (``eval/t2v/seen/colour``, ...; also
TensorBoard) and onto a panel of ``loss_curve.png`` beside the loss; the generated clips are not kept.

Scenes and sampling seeds are fixed (``eval.seed``), so two evaluations differ only by the weights. The
evaluation reads the weights and never changes them or the data order: a run's losses are the same with
evaluation on or off (tested), and ``eval`` is not part of the run's fingerprint.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

import jax

from videopoet.rundir.metrics import Panel
from videopoet.trainer.config import TrainConfig

# the panel beside the loss: the accuracy of generated samples against the step
EVAL_PANEL = Panel(
    "generated samples (synthetic-world scorer)",
    (
        "eval/t2v/seen/colour",
        "eval/t2v/seen/shape",
        "eval/t2v/seen/motion",
        "eval/t2v/heldout/colour",
        "eval/t2v/heldout/motion",
        "eval/i2v/seen/kept",
        "eval/fp/seen/kept",
        "eval/v2a/seen/audio_colour",
    ),
    ylabel="fraction correct",
)


# training loss beside the held-out loss: a gap that grows is the model learning its training records
HELDOUT_PANEL = Panel(
    "training vs held-out loss",
    ("loss", "heldout/loss"),
    ylabel="cross-entropy (nats / output token)",
    hline="unigram_baseline",
)


class HeldoutLoss:
    """``heldout(params)`` -> the row's ``heldout`` dict: ``{"loss", "accuracy", "tasks": {task: {loss,
    accuracy, tokens}}, "tokens", "batches", "seconds"}``.

    The held-out dataset (``eval.heldout_data``; a NAME@VERSION resolves under the training ``root``) is
    verified and checked against the model's vocabulary like the training data, and mixed with the run's
    own task mixture, seed and batch size, without condition dropout or the image curriculum (the
    conditional loss of every task). Its first ``eval.heldout_batches`` global batches are drawn once and
    measured again at every call, so two figures differ only by the weights. Every process calls it (the
    loss is one computation over the mesh, each process giving its rows of each batch); it reads the
    weights and never changes them or the training data order."""

    def __init__(self, cfg: TrainConfig, trainer, root: str | None, process_index: int = 0, process_count: int = 1):
        import dataclasses

        from videopoet.trainer import data

        e = cfg.eval
        measured = dataclasses.replace(cfg, data=cfg.data.measured())
        ref = data.parse_data_spec(e.heldout_data)[0][0]
        _, mixture = data.open_mixture(ref, measured, root)
        self.trainer = trainer
        self.batches = [mixture.local_batch(i, process_index, process_count) for i in range(e.heldout_batches)]

    def __call__(self, params) -> dict[str, Any]:
        import numpy as np

        from videopoet.trainer import data, metrics

        t0 = time.perf_counter()
        sums: dict[str, np.ndarray] = {}
        for batch in self.batches:
            m = jax.device_get(self.trainer.evaluate(params, {k: batch[k] for k in data.BATCH_KEYS}))
            for k in ("task_loss_sum", "task_correct", "task_tokens"):
                sums[k] = sums.get(k, 0) + np.asarray(m[k], np.float64)
        tokens = float(sums["task_tokens"].sum())
        return {
            "loss": float(sums["task_loss_sum"].sum() / max(tokens, 1.0)),
            "accuracy": float(sums["task_correct"].sum() / max(tokens, 1.0)),
            "tasks": metrics.per_task(sums),
            "tokens": int(tokens),
            "batches": len(self.batches),
            "seconds": round(time.perf_counter() - t0, 2),
        }


class Evaluator:
    """``evaluator(params, step)`` -> the row's ``eval`` dict: ``{task: {split: {metric: value}}, "seconds": s}``."""

    def __init__(self, cfg: TrainConfig, model, manifest: dict):
        self.cfg = cfg
        self.model = model
        self.manifest = manifest
        self._gen = None

    def generator(self, params):
        from videopoet.trainer import generation

        if self._gen is None:
            e = self.cfg.eval
            self._gen = generation.Generator.from_parts(
                self.model,
                params,
                self.cfg,
                self.manifest,
                video_tokenizer=e.video_tokenizer or None,
                audio_tokenizer=e.audio_tokenizer or None,
                info={"run": "training"},
            )
        self._gen.params = params
        return self._gen

    def __call__(self, params, step: int) -> dict[str, Any]:
        from videopoet.trainer import evaluate

        t0 = time.perf_counter()
        e = self.cfg.eval
        gen = self.generator(jax.device_get(params))
        tmp = tempfile.mkdtemp(prefix="videopoet-train-eval-")
        try:
            report = evaluate.evaluate_model(gen, tmp, per_split=e.samples, samples=1, seed=e.seed, tasks=e.tasks)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out: dict[str, Any] = {}
        for task in e.tasks:
            if task in report:
                out[task] = {
                    split: {k: v for k, v in agg.items() if k != "n" and isinstance(v, (int, float))}
                    for split, agg in report[task].items()
                }
        out["seconds"] = round(time.perf_counter() - t0, 2)
        out["samples"] = e.samples
        return out
