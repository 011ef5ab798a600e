"""The metrics log of a run directory (``metrics.jsonl`` + TensorBoard events in ``tb/``) and its plot.

One JSON object per logged step, ``{"step": N, ...}``, keys sorted. On a resume from step S the rows
after S are dropped (the resumed run logs them again), so the file reads as one uninterrupted run.
TensorBoard gets every finite number of a row (nested dicts as ``a/b``) when tensorboardX is installed.

On object storage (no appends) ``metrics.jsonl`` is rewritten as one object per logged row, and the
TensorBoard events are written to a staging directory in this host's cache and uploaded to
``RUN/tb/`` after each row (TensorBoard reads ``gs://`` and ``s3://`` log dirs itself).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import fsspec

from videopoet.schemas import objstore

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tb"


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """Every row of ``RUN/metrics.jsonl`` (empty when there is none)."""
    fs, root = fsspec.core.url_to_fs(str(run_dir))
    path = f"{root}/{METRICS_FILE}"
    if not fs.exists(path):
        return []
    with fs.open(path, "r") as f:
        return [json.loads(line) for line in f if line.strip()]


def flatten(row: dict, prefix: str = "") -> dict[str, Any]:
    """``{"tasks": {"t2v": {"loss": x}}}`` -> ``{"tasks/t2v/loss": x}``."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


class MetricsLog:
    """Appends rows to ``RUN/metrics.jsonl`` (and TensorBoard); ``rows`` holds every row of the run so far.

    ``resume_step``: the step the run continues from (rows after it are dropped); ``enabled`` False
    (a non-lead process) writes nothing."""

    def __init__(self, run_dir: str, *, resume_step: int = 0, enabled: bool = True, tensorboard: bool = True):
        self.run_dir = str(run_dir)
        self.enabled = enabled
        self.remote = objstore.is_remote(self.run_dir)
        self.rows: list[dict[str, Any]] = []
        self.tb = None
        self._tb_local = None  # a local staging dir for an object-store run's TensorBoard events
        if not enabled:
            return
        self.fs, root = fsspec.core.url_to_fs(self.run_dir)
        self.fs.makedirs(root, exist_ok=True)
        self.path = f"{root}/{METRICS_FILE}"
        old = read_metrics(self.run_dir)
        self.rows = [r for r in old if r.get("step", 0) <= resume_step]
        if len(self.rows) != len(old):
            self._rewrite()
        self._tb_dir = f"{root}/{TENSORBOARD_DIR}"
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # TensorBoard events are optional
                SummaryWriter = None
            if SummaryWriter is not None:
                if self.remote:
                    from videopoet.rundir.checkpoints import staging_dir

                    self._tb_local = staging_dir(self.run_dir, TENSORBOARD_DIR)
                self.tb = SummaryWriter(self._tb_local or self._tb_dir)

    def _rewrite(self) -> None:
        with self.fs.open(self.path, "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in self.rows)

    def write(self, step: int, row: dict[str, Any]) -> dict[str, Any]:
        """Log ``row`` at ``step``; returns the stored row (with ``step``)."""
        rec = {**row, "step": int(step)}
        if not self.enabled:
            return rec
        self.rows.append(rec)
        if self.remote:  # object stores have no append: the (small) file is rewritten
            self._rewrite()
        else:
            with self.fs.open(self.path, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in flatten(row).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()
            self._upload_tb()
        return rec

    def _upload_tb(self) -> None:
        """Copy the staged TensorBoard event files to RUN/tb/ (an object-store run directory)."""
        if self._tb_local is None:
            return
        for name in sorted(os.listdir(self._tb_local)):
            self.fs.put_file(os.path.join(self._tb_local, name), f"{self._tb_dir}/{name}")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
            self._upload_tb()
        if self._tb_local is not None:
            import shutil

            shutil.rmtree(os.path.dirname(self._tb_local), ignore_errors=True)
            self._tb_local = None


@dataclasses.dataclass(frozen=True)
class Panel:
    """One plot of the loss figure: ``keys`` (flattened row keys ``a/b``; a glob such as ``tasks/*/loss``
    stands for every key it matches) against the step."""

    title: str
    keys: tuple[str, ...]
    log_y: bool = False
    ylabel: str = ""
    hline: str | None = None  # a row key drawn as a dashed horizontal line (its last value)


def plot_curves(
    rows: Sequence[dict[str, Any]], panels: Sequence[Panel], path: str, vlines: Sequence[float] = ()
) -> str | None:
    """A PNG with one plot per panel (keys missing from every row are skipped). Returns the path, or None
    when there is nothing to plot."""
    rows = [flatten(r) for r in rows if "step" in r]
    if not rows or not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(max(7, 4.4 * len(panels)), 3.8), squeeze=False)
    names = sorted({k for r in rows for k in r})
    for ax, panel in zip(axes[0], panels, strict=True):
        keys = [k for pattern in panel.keys for k in (fnmatch.filter(names, pattern) if "*" in pattern else [pattern])]
        for key in keys:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts, strict=True), lw=2 if key == keys[0] else 0.9, label=key)
        if panel.hline and isinstance(rows[-1].get(panel.hline), (int, float)):
            ax.axhline(rows[-1][panel.hline], color="k", ls="--", lw=0.8, label=panel.hline)
        for x in vlines:
            ax.axvline(x, color="gray", ls="--", lw=0.8)
        if panel.log_y:
            ax.set_yscale("log")
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with fsspec.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path
