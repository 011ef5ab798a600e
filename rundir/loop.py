"""The parts of a training loop every run shares: progress bar, stop conditions, hooks.

Hooks work as in Levanter: ``run.add_hook(fn, every=N)`` calls ``fn(info)`` after every N-th step with
a :class:`StepInfo` (the step just finished, the new state, the step's metrics); the last step of the
run calls every hook whatever its ``every``. The loop's own logging and checkpointing are hooks too,
registered first, so a user hook sees the row just logged (``run.last_row``) and the step just saved
(``run.saved_step``).

Stop conditions, checked after the hooks of each step: the step count (the loop's ``while``), SIGTERM
(a preemption notice), ``max_seconds`` of wall time and :meth:`Run.request_stop` from a hook. A stop
saves the state of that step (unless it was just saved) before the loop breaks, so a restart resumes
exactly there.

SIGTERM with several processes (``jax.distributed``): JAX's preemption service catches it on whichever
host gets it and agrees on one step at which every process stops (``reached_preemption_sync_point``),
so no process leaves a collective the others are still in; no Python handler is installed then (it
would replace the service's own).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from videopoet.rundir.metrics import MetricsLog, Panel, plot_curves

LOSS_CURVE_FILE = "loss_curve.png"


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What a hook is called with: ``step`` steps are done (1-based), ``state`` is the state after it,
    ``metrics`` the step's metrics as the step returned them (device arrays: ``float()`` one to read it)."""

    step: int
    state: Any
    metrics: Mapping[str, Any]
    run: Run

    @property
    def loss(self) -> float:
        return float(self.metrics["loss"])


@dataclasses.dataclass(frozen=True)
class Hook:
    """``fn(info)`` after every ``every``-th step (and after the run's last step)."""

    fn: Callable[[StepInfo], None]
    every: int = 1

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"a hook's every must be >= 1, got {self.every}")


def _preemption_service() -> bool:
    """Whether this is one of several jax.distributed processes with JAX's preemption service running."""
    import sys

    if "jax" not in sys.modules:
        return False
    from jax._src import distributed

    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class Run:
    """One training loop's view of its run directory while it runs.

    ``total_steps`` / ``start_step``: the run's length and where it (re)starts; ``save(step, state)``
    writes a checkpoint (called every ``checkpoint_every`` steps, at the last step and on a stop);
    ``lead``: this process writes metrics, the progress bar and the plot (the others only compute);
    ``panels``: the plots of ``RUN/loss_curve.png`` (none: no plot), ``vlines``: steps marked on them
    (a phase change).

    Use it as a context manager: on exit the progress bar closes, the SIGTERM handler is put back and
    the metrics log is closed (the loop closes its checkpoints itself, after the last save)."""

    def __init__(
        self,
        run_dir: str,
        *,
        total_steps: int,
        start_step: int = 0,
        save: Callable[[int, Any], None],
        checkpoint_every: int,
        lead: bool = True,
        progress: bool = True,
        desc: str = "train",
        max_seconds: float | None = None,
        panels: Sequence[Panel] = (),
        vlines: Sequence[float] = (),
        tensorboard: bool = True,
    ):
        self.run_dir = str(run_dir)
        self.total_steps = int(total_steps)
        self.start_step = int(start_step)
        self.lead = lead
        self.max_seconds = max_seconds
        self.panels = tuple(panels)
        self.vlines = tuple(vlines)
        self.metrics = MetricsLog(self.run_dir, resume_step=self.start_step, enabled=lead, tensorboard=tensorboard)
        self.saved_step: int | None = self.start_step if self.start_step else None
        self.last_row: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self._save = save
        self._hooks: list[Hook] = [Hook(self._checkpoint_hook, checkpoint_every)]
        self._stop_requested: str | None = None
        self._sigterm = threading.Event()
        self._old_handler = None
        self._preemption_sync = _preemption_service()
        self._bar = None
        self._progress = progress and lead
        self._desc = desc
        self.t0 = time.time()

    # ---------------------------------------------------------------- hooks
    def add_hook(self, fn: Callable[[StepInfo], None] | Hook, every: int = 1) -> None:
        """Call ``fn(info)`` after every ``every``-th step (a :class:`Hook` brings its own ``every``)."""
        self._hooks.append(fn if isinstance(fn, Hook) else Hook(fn, every))

    def add_log_hook(self, row_of: Callable[[StepInfo], dict[str, Any]], every: int) -> None:
        """Log ``row_of(info)`` every ``every`` steps, before the checkpoint and every other hook."""

        def log(info: StepInfo) -> None:
            self.log(info.step, row_of(info))

        self._hooks.insert(0, Hook(log, every))

    def log(self, step: int, row: dict[str, Any]) -> dict:
        """Write a metrics row (``metrics.jsonl``, TensorBoard); it becomes ``last_row``."""
        self.last_row = self.metrics.write(step, row)
        return self.last_row

    def show(self, **postfix: Any) -> None:
        """Values shown after the progress bar (loss, phase, ...)."""
        if self._bar is not None:
            self._bar.set_postfix(postfix)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop after the current step (its state is saved first)."""
        self._stop_requested = reason

    def save(self, step: int, state) -> None:
        """Checkpoint ``state`` as ``step`` now (once per step: a second call for the same step does nothing)."""
        if self.saved_step != step:
            self._save(step, state)
            self.saved_step = step

    def _checkpoint_hook(self, info: StepInfo) -> None:
        self.save(info.step, info.state)

    # ---------------------------------------------------------------- the loop's side
    def step_done(self, step: int, state, metrics: Mapping[str, Any]) -> bool:
        """Run the hooks due after ``step``; True when the loop must stop (the state is then saved)."""
        if self._bar is not None:
            self._bar.update(1)
        info = StepInfo(step, state, metrics, self)
        last = step >= self.total_steps
        for hook in self._hooks:
            if last or step % hook.every == 0:
                hook.fn(info)
        if last:
            return False
        reason = self._stop_requested
        if self._preemption_sync:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self._sigterm.set()
        if self._sigterm.is_set():
            reason = "sigterm"
        elif reason is None and self.max_seconds is not None and time.time() - self.t0 > self.max_seconds:
            reason = "time limit"
        if reason is None:
            return False
        self.save(step, state)
        self.stop_reason = reason
        return True

    @property
    def status(self) -> str:
        return self.stop_reason or "completed"

    def plot(self) -> str | None:
        """``RUN/loss_curve.png`` from every metrics row of the run (lead process only)."""
        if not self.lead or not self.panels:
            return None
        return plot_curves(self.metrics.rows, self.panels, f"{self.run_dir.rstrip('/')}/{LOSS_CURVE_FILE}", self.vlines)

    def __enter__(self) -> Run:
        # several processes: JAX's preemption service handles SIGTERM (module docstring)
        if not self._preemption_sync and threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGTERM, lambda *_: self._sigterm.set())
        if self._progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total_steps, initial=self.start_step, desc=self._desc, unit="step", dynamic_ncols=True
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._old_handler is not None:
            signal.signal(signal.SIGTERM, self._old_handler)
            self._old_handler = None
        self.metrics.close()
