"""Extending a finished run: the same run directory continued with a larger ``steps``.

Why it can be exact: every global batch is a function of (seed, step), and with ``lr_schedule=wsd``
(warm-up, stable, decay) the learning rate of each step before the decay phase is the peak whatever
``steps`` is; with ``data.switch_step`` the image -> video curriculum does not move with ``steps``
either. So a run of N steps and a run of M > N steps compute steps ``0 .. D-1`` (D: the N-run's decay
start) bit for bit alike. The trainer saves a checkpoint at D and keeps it (never rotated away);
resuming the N-run's directory with ``steps=M`` goes back to it, drops the checkpoints and metrics rows
after it (they were the N-run's decay) and trains ``D .. M`` with the M-run's schedule. The extended run
then equals a run trained to M from the start, step for step (tests/test_trainer_extend.py).

What may change on such a resume: :data:`LENGTH_FIELDS` (steps, the decay length, the curriculum
switch), as long as the learning rates and curriculum of the steps before some kept checkpoint are the
same; the run goes back to the latest such checkpoint. Runs whose schedule depends on ``steps`` from
early on (cosine, or a curriculum switch given as a fraction) have no such checkpoint and are refused
in one line. Everything else that changes the numbers is refused as before (``checkpoint.record_config``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from videopoet.rundir.record import differing_fields
from videopoet.trainer import checkpoint
from videopoet.trainer.config import TrainConfig

# config fields an extension may change (they set the schedule's length, not its per-step numbers)
LENGTH_FIELDS = ("steps", "decay_steps", "decay_fraction", "data.switch_fraction", "data.switch_step")


def schedule(cfg: TrainConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(learning rate, image fraction) of steps ``0 .. n-1`` as the train step and the mixture compute them."""
    from videopoet.trainer import data, step

    steps = np.arange(n)
    lr = np.asarray(step.lr_schedule(cfg)(steps), np.float32)
    return lr, np.asarray(data.image_fraction(cfg, steps), np.float64)


def first_difference(old: TrainConfig, new: TrainConfig) -> int:
    """The first step whose learning rate or curriculum differs between ``old`` and ``new`` (the shorter
    run's ``steps`` when none does)."""
    n = min(old.steps, new.steps)
    (lr_a, im_a), (lr_b, im_b) = schedule(old, n), schedule(new, n)
    same = (lr_a == lr_b) & ((im_a == im_b) | (np.isnan(im_a) & np.isnan(im_b)))
    bad = np.flatnonzero(~same)
    return int(bad[0]) if bad.size else n


def is_extension(old: TrainConfig, new: TrainConfig) -> bool:
    """Whether ``new`` differs from the recorded ``old`` in a length field (the other differences are
    :func:`checkpoint.record_config`'s to judge)."""
    return any(f in LENGTH_FIELDS for f in differing_fields(old, new))


@dataclasses.dataclass(frozen=True)
class Extension:
    from_steps: int
    to_steps: int
    resume_step: int  # the checkpoint the run goes back to
    dropped: tuple[int, ...]  # later checkpoints, computed with the old schedule
    first_difference: int

    def record(self) -> dict:
        return dataclasses.asdict(self) | {"dropped": list(self.dropped)}


def plan(old: TrainConfig, new: TrainConfig, checkpoint_steps: list[int], run_dir: str) -> Extension:
    """Where an extended run resumes: the latest checkpoint at or before the first step whose schedule
    changes. :class:`checkpoint.RunError` when there is none."""
    first = first_difference(old, new)
    usable = [s for s in checkpoint_steps if 0 < s <= first]
    if not usable:
        why = (
            f"its learning rate or curriculum changes from step {first} when steps goes from {old.steps} to "
            f"{new.steps}, and it has no checkpoint at or before that step"
        )
        hint = (
            "train with lr_schedule=wsd and data.switch_step to make runs extendable"
            if old.lr_schedule != "wsd" or not old.data.switch_step
            else "its decay-start checkpoint is gone"
        )
        raise checkpoint.RunError(f"cannot extend {run_dir}: {why} ({hint}), or use a new --out")
    resume = max(usable)
    return Extension(
        from_steps=old.steps,
        to_steps=new.steps,
        resume_step=resume,
        dropped=tuple(s for s in checkpoint_steps if s > resume),
        first_difference=first,
    )


def fingerprint(cfg: TrainConfig) -> str:
    """The numeric fingerprint without the length fields: equal for a run and its extensions."""
    return checkpoint.numeric_fingerprint(cfg, without=LENGTH_FIELDS)
