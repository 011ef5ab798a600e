"""Evaluation during training: every ``eval.every`` steps, score a few generated samples on the synthetic world.

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
