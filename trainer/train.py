"""The training loop: data -> step -> metrics / checkpoints, with auto-resume and save-on-SIGTERM.

``train(cfg, data_ref, out)`` verifies the dataset, builds the mixture (:mod:`.data`), the compiled
step (:mod:`.step`) and the Orbax manager (:mod:`.checkpoint`), and resumes from the latest
checkpoint in ``out`` if there is one (same config and dataset fingerprint required). Because each
batch is a pure function of (seed, step) and the checkpoint holds params, optimizer state and the
Grain iterator state, a resumed run's losses equal an uninterrupted run's bit for bit.

Hooks (``Hooks``) receive each step's loss, each logged row and each checkpoint; the CLI uses them
for nothing but printing, tests for stopping early.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from videopoet.trainer import checkpoint as CK
from videopoet.trainer import data as D
from videopoet.trainer import metrics as MT
from videopoet.trainer import step as ST
from videopoet.trainer.config import TrainConfig


@dataclasses.dataclass
class Hooks:
    on_step: Callable[[int, float], None] | None = None  # (step just finished (1-based), loss)
    on_log: Callable[[int, dict], None] | None = None
    on_checkpoint: Callable[[int], None] | None = None
    stop: Callable[[int], bool] | None = None  # return True to checkpoint and stop after this step


def unigram_entropy(mix: D.Mixture, samples: int = 32) -> float:
    """Entropy (nats) of the output-token distribution over ``samples`` global batches spread evenly over
    the run (so the curriculum's image and video phases are both represented): the loss of a model
    that ignores all context, which training must beat."""
    counts: dict[int, int] = {}
    for s in sorted(set(np.linspace(0, max(mix.cfg.steps - 1, 0), samples).astype(int).tolist())):
        b = mix.global_batch(s)
        t = b["targets"][b["loss_mask"]]
        for k, c in zip(*np.unique(t, return_counts=True)):
            counts[int(k)] = counts.get(int(k), 0) + int(c)
    n = np.array(list(counts.values()), np.float64)
    p = n / n.sum()
    return float(-(p * np.log(p)).sum())


class _Accum:
    def __init__(self):
        self.reset()

    def reset(self):
        self.sums: dict[str, np.ndarray] = {}
        self.losses: list[float] = []
        self.data_s = self.compute_s = 0.0
        self.tokens = self.target_tokens = self.masked = 0
        self.flops = 0.0
        self.padded_without_agd = 0
        self.groups: dict[str, int] = {}
        self.t0 = time.perf_counter()

    def add(self, m: dict, batch: dict, flops: float, max_len: int, pcount: int):
        for k in ("task_loss_sum", "task_correct", "task_tokens", "task_examples"):
            v = np.asarray(m[k], np.float64)
            self.sums[k] = self.sums.get(k, 0) + v
        self.losses.append(float(m["loss"]))
        b, s = batch["tokens"].shape
        self.tokens += b * s * pcount
        self.target_tokens += int(batch["loss_mask"].sum()) * pcount
        self.masked += int((~batch["valid"]).sum()) * pcount
        self.padded_without_agd += b * (max_len - s) * pcount
        self.flops += flops
        self.groups[batch["group"]] = self.groups.get(batch["group"], 0) + 1


def _install_sigterm(flag: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: flag.set())


def train(cfg: TrainConfig, data_ref: str | None, out: str, root: str | None = None, *,
          mixture: D.Mixture | None = None, dataset_info: dict | None = None, hooks: Hooks | None = None) -> dict:
    """Train (or resume) into ``out``. Give ``data_ref`` (NAME@VERSION or a version dir) or a ready ``mixture``."""
    hooks = hooks or Hooks()
    pidx, pcount = jax.process_index(), jax.process_count()
    lead = pidx == 0
    CK.check_resumable(out, cfg)
    old_info = CK.read_run_info(out) or {}
    if mixture is None:
        ds, mixture = D.open_mixture(data_ref, cfg, root, expect_fingerprint=old_info.get("dataset", {}).get("fingerprint"))
        dataset_info = {"ref": ds.ref, "fingerprint": ds.fingerprint, "uri": ds.uri,
                        "tokenizers": {k: v.get("fingerprint") for k, v in
                                       ((ds.manifest.get("lineage") or {}).get("tokenizers") or {}).items()}}
    dataset_info = dataset_info or {"ref": "in-memory", "fingerprint": None}
    trainer = _trainer(cfg)
    mngr = CK.manager(out, cfg)
    latest = mngr.latest_step()
    baseline = old_info.get("unigram_baseline")
    if baseline is None:
        baseline = unigram_entropy(mixture)
    text_fp = (dataset_info.get("tokenizers") or {}).get("text")
    if text_fp and text_fp != trainer.text.fingerprint and lead:
        print(f"videopoet: warning: the dataset's captions were tokenized by text encoder {text_fp[:12]}, the trainer's "
              f"{cfg.text_encoder!r} is {trainer.text.fingerprint[:12]} (fine only if they share the SentencePiece model)",
              file=sys.stderr)
    info = {
        "dataset": dataset_info, "vocab": cfg.model.vocab.to_dict(), "text_encoder": cfg.text_encoder,
        "text_encoder_fingerprint": trainer.text.fingerprint, "plan": mixture.stats(), "unigram_baseline": baseline,
        "config_fingerprint": CK.numeric_fingerprint(cfg), "processes": pcount, "devices": jax.device_count(),
    }
    if lead:
        CK.write_run_files(out, cfg, info)

    data_iter = iter(mixture.dataset(0, pidx, pcount))
    if latest is None:
        state, start = trainer.init(), 0
    else:
        state, meta = CK.restore(mngr, latest, trainer.abstract_state(), data_iter)
        start = int(state["step"])
        if start != latest or meta.get("config_fingerprint") != info["config_fingerprint"]:
            raise CK.RunError(f"checkpoint {latest} in {out} does not match this run (step {start}, config differs?)")

    writer = MT.MetricsWriter(out, enabled=lead)
    peak, peak_src = MT.device_peak_flops(override=cfg.peak_flops)
    n_dev = jax.device_count()
    stop_flag = threading.Event()
    old_handler = _install_sigterm(stop_flag)
    bar = None
    if lead and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    acc = _Accum()
    last_row: dict[str, Any] = {}
    saved_at = latest
    step = start
    stopped = "completed"

    def ckpt(n: int):
        nonlocal saved_at
        meta = {"step": n, "dataset_fingerprint": dataset_info.get("fingerprint"),
                "config_fingerprint": info["config_fingerprint"]}
        CK.save(mngr, n, state, data_iter, meta, force=True)
        saved_at = n
        if hooks.on_checkpoint:
            hooks.on_checkpoint(n)

    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            batch = next(data_iter)
            t1 = time.perf_counter()
            state, m = trainer.step(state, batch)
            loss = float(m["loss"])  # waits for the step
            m = jax.device_get(m)
            t2 = time.perf_counter()
            step += 1
            flops = MT.step_flops(cfg.model, batch["tokens"].shape[1], batch["prefix_len"]) * pcount
            acc.add(m, batch, flops, mixture.plan.max_length, pcount)
            acc.data_s += t1 - t0
            acc.compute_s += t2 - t1
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}")
            if hooks.on_step:
                hooks.on_step(step, loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", group=batch["group"])
            if step % cfg.log_every == 0 or step == cfg.steps:
                last_row = _row(acc, m, peak, n_dev, baseline, mixture, step)
                writer.write(step, last_row)
                if hooks.on_log:
                    hooks.on_log(step, last_row)
                acc.reset()
            want_stop = stop_flag.is_set() or (hooks.stop is not None and hooks.stop(step))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or want_stop:
                ckpt(step)
            if want_stop:
                stopped = "sigterm" if stop_flag.is_set() else "stopped"
                break
    finally:
        mngr.wait_until_finished()
        mngr.close()
        writer.close()
        if bar is not None:
            bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    png = MT.plot_loss_curve(out) if lead else None
    return {"status": stopped, "step": step, "resumed_from": latest, "last": last_row, "unigram_baseline": baseline,
            "run_dir": out, "loss_curve": png, "peak_flops": peak, "peak_source": peak_src, "checkpoint": saved_at}


_TRAINERS: dict[str, ST.Trainer] = {}


def _trainer(cfg: TrainConfig) -> ST.Trainer:
    """Compiled steps are reused within a process for the same numbers + devices (resume tests, sweeps)."""
    key = CK.numeric_fingerprint(cfg) + repr(cfg.mesh) + repr(jax.devices())
    if key not in _TRAINERS:
        _TRAINERS.clear()
        _TRAINERS[key] = ST.make_trainer(cfg)
    return _TRAINERS[key]


def _row(acc: _Accum, m: dict, peak: float, n_dev: int, baseline: float, mix: D.Mixture, step: int) -> dict:
    wall = time.perf_counter() - acc.t0
    n = max(len(acc.losses), 1)
    compute = max(acc.compute_s, 1e-9)
    return {
        "loss": float(np.mean(acc.losses)),
        "losses": acc.losses,
        "tasks": MT.per_task(acc.sums),
        "lr": float(m["lr"]),
        "grad_norm": float(m["grad_norm"]),
        "tokens_per_s": acc.tokens / max(wall, 1e-9),
        "target_tokens_per_s": acc.target_tokens / max(wall, 1e-9),
        "step_time_s": wall / n,
        "data_wait_s": acc.data_s / n,
        "compute_s": acc.compute_s / n,
        "mfu": acc.flops / compute / (peak * n_dev) if peak == peak else None,
        "flops_per_step": acc.flops / n,
        "pad_fraction": acc.masked / max(acc.tokens, 1),
        "pad_fraction_without_agd": (acc.masked + acc.padded_without_agd) / max(acc.tokens + acc.padded_without_agd, 1),
        "groups": acc.groups,
        "image_fraction": float(mix.image_fraction(step - 1)) if mix.cfg.data.curriculum else None,
        "unigram_baseline": baseline,
    }
