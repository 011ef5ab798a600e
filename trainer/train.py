"""The training loop: data -> step -> metrics / checkpoints, with auto-resume and save-on-SIGTERM.

``train(cfg, data_ref, out)`` verifies the dataset, builds the mixture (:mod:`.data`), the compiled
step (:mod:`.step`) and the Orbax manager (:mod:`.checkpoint`), and resumes from the latest
checkpoint in ``out`` if there is one (same config and dataset fingerprint required). Because each
batch is a pure function of (seed, step) and the checkpoint holds params, optimizer state and the
step, a resumed run's losses equal an uninterrupted run's bit for bit on the same shape.

Elastic resume: the data position is the checkpoint's step (the data iterator restarts there), not
a per-process iterator state, and Orbax restores the state onto this run's mesh (the abstract
state's shardings), so a run checkpointed on one shape (processes x devices) resumes on another
with the same global batches; its losses then match within float tolerance (the cross-device
reduction order changes with the mesh). Checkpoints that also hold the older per-process Grain
iterator state stay readable: that item is not read.

Several datasets (``--data a@1=0.7,b@prod=0.3``): a :class:`~videopoet.trainer.data.DatasetMixture`,
each global batch from one dataset, in exact proportion to the weights. run.json's ``dataset`` then
lists every dataset (fingerprint, weight) under ``mixture``, its ``fingerprint`` is the mixture's
(the datasets', not the weights) and ``schedule`` holds the weights in force from each step: a resume
with other weights keeps the schedule before its step and continues every dataset from its position
there (the checkpoint's ``data_positions`` are checked against it). A resume may not add or remove a
dataset. Metrics rows carry ``datasets``: the records drawn from each, cumulative.

The run directory (config record, checkpoints, metrics log, progress bar, loss curve, SIGTERM) is
:class:`videopoet.rundir.loop.Run`; ``hooks`` are its :class:`~videopoet.rundir.loop.Hook` s, called every N
steps with the step's :class:`~videopoet.rundir.loop.StepInfo` (the CLI prints rows with one, tests stop
early with one).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from videopoet.rundir.loop import Hook, Run, StepInfo
from videopoet.schemas.config import to_dict
from videopoet.trainer import adapt, checkpoint, data, extend, metrics, step, train_eval
from videopoet.trainer.config import TrainConfig


def unigram_entropy(mix: data.Mixture | data.DatasetMixture, samples: int = 32) -> float:
    """Entropy (nats) of the output-token distribution over ``samples`` global batches spread evenly over
    the run (so the curriculum's image and video phases are both represented): the loss of a model
    that ignores all context, which training must beat."""
    counts: dict[int, int] = {}
    for s in sorted(set(np.linspace(0, max(mix.cfg.steps - 1, 0), samples).astype(int).tolist())):
        b = mix.global_batch(s)
        t = b["targets"][b["loss_mask"]]
        for k, c in zip(*np.unique(t, return_counts=True), strict=True):
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


def train(
    cfg: TrainConfig,
    data_ref: str | None,
    out: str,
    root: str | None = None,
    *,
    mixture: data.Mixture | data.DatasetMixture | None = None,
    dataset_info: dict | None = None,
    hooks: Sequence[Hook] = (),
    identity: dict | None = None,
    init_from: str | None = None,
    grow: bool = False,
    allow_tokenizer_change: bool = False,
) -> dict:
    """Train (or resume) into ``out``. Give ``data_ref`` (NAME@VERSION or a version dir, or a mixture
    ``NAME@VER=WEIGHT,NAME@VER=WEIGHT,...``: :class:`~videopoet.trainer.data.DatasetMixture`) or a ready ``mixture``.

    ``hooks``: :class:`~videopoet.rundir.loop.Hook` s called every N steps after the step's row is logged
    and its checkpoint saved (``info.run.request_stop()`` ends the run after saving). ``identity`` (where and
    with what software the run runs: ``videopoet.infra.launch.run_identity``) goes into run.json.
    ``init_from``: a trained run (or one of its checkpoint dirs) whose weights a new run starts from, with a
    fresh optimizer (:mod:`.adapt`); ignored when ``out`` already has checkpoints (a resume). ``grow``: the
    run may have more layers than ``init_from`` (its new blocks start as the identity).
    ``allow_tokenizer_change``: accept an ``init_from`` trained on datasets of other tokenizers."""
    pidx, pcount = jax.process_index(), jax.process_count()
    lead = pidx == 0
    old_info = checkpoint.read_run_info(out) or {}
    manifest: dict = {}
    if mixture is None and data.is_mixture_spec(data_ref):
        opened, mixture = data.open_dataset_mixture(data_ref, cfg, root, previous=old_info.get("dataset"))
        manifest = opened[0].manifest
    elif mixture is None:
        if (old_info.get("dataset") or {}).get("mixture"):
            raise data.DataMismatchError(
                f"this run was trained on the mixture {old_info['dataset'].get('ref')}; a resume on one dataset "
                "is refused (weights may change, the datasets may not; use a new --out)"
            )
        ref = data.parse_data_spec(data_ref)[0][0]  # one dataset (a weight, if given, is 1)
        ds, mixture = data.open_mixture(
            ref, cfg, root, expect_fingerprint=old_info.get("dataset", {}).get("fingerprint")
        )
        dataset_info = data.dataset_record(ds)
        manifest = ds.manifest
    mixed = isinstance(mixture, data.DatasetMixture)
    dataset_info = dataset_info or {"ref": "in-memory", "fingerprint": None}
    old_cfg = checkpoint.record_config(out, cfg, write=False, changeable=extend.LENGTH_FIELDS)
    ckpts = checkpoint.open_checkpoints(out, cfg)
    ext = source = None
    try:
        if old_cfg is not None and extend.is_extension(old_cfg, cfg):
            ext = extend.plan(old_cfg, cfg, ckpts.all_steps(), out)
        trainer = _trainer(cfg)
        heldout = train_eval.HeldoutLoss(cfg, trainer, root, pidx, pcount) if cfg.eval.heldout_every else None
        if init_from is not None and ckpts.latest_step() is None:
            tokenizers = (mixture.record() if mixed else dataset_info).get("tokenizers")
            source = adapt.check(
                adapt.resolve(init_from, grow=grow),
                cfg,
                trainer.text.fingerprint,
                tokenizers,
                allow_tokenizer_change,
            )
    except Exception:
        ckpts.close()
        raise
    latest = ext.resume_step if ext else ckpts.latest_step()
    weight_change = None
    if mixed:  # the recorded weight schedule up to the resume step, this run's weights from there
        if data_ref is None and (old_info.get("dataset") or {}).get("schedule"):
            mixture.schedule = old_info["dataset"]["schedule"]
        weight_change = mixture.start_at(latest or 0)
        dataset_info = mixture.record()
        if weight_change and lead:
            was = ", ".join(f"{n} {w:g}" for n, w in weight_change["previous"].items())
            now = ", ".join(f"{n} {w:g}" for n, w in weight_change["weights"].items())
            print(f"videopoet: dataset weights change at step {latest}: {was} -> {now}", file=sys.stderr)
    # checked: now the run dir changes
    if ext and lead:
        for s in ext.dropped:
            ckpts.delete(s)
    checkpoint.record_config(out, cfg, write=lead, changeable=extend.LENGTH_FIELDS)
    baseline = old_info.get("unigram_baseline")
    if baseline is None:
        baseline = unigram_entropy(mixture)
    text_fp = (dataset_info.get("tokenizers") or {}).get("text")
    if text_fp and text_fp != trainer.text.fingerprint and lead:
        print(
            f"videopoet: warning: the dataset's captions were tokenized by text encoder {text_fp[:12]}, the "
            f"trainer's {cfg.text_encoder!r} is {trainer.text.fingerprint[:12]} (fine only if they share the "
            "SentencePiece model)",
            file=sys.stderr,
        )
    info = {
        "dataset": dataset_info,
        "vocab": cfg.model.vocab.to_dict(),
        "text_encoder": cfg.text_encoder,
        "text_encoder_fingerprint": trainer.text.fingerprint,
        "plan": mixture.stats(),
        "unigram_baseline": baseline,
        "config_fingerprint": checkpoint.numeric_fingerprint(cfg),
        "processes": pcount,
        "devices": jax.device_count(),
        "config": to_dict(cfg),
        "extensions": old_info.get("extensions", []) + ([ext.record()] if ext else []),
        "init_from": source.record() if source else old_info.get("init_from"),
        **({"identity": identity} if identity is not None else {}),
    }
    if lead:
        checkpoint.write_run_info(out, info)

    if latest is None:
        state, start = (adapt.initial_state(trainer, source) if source else trainer.init()), 0
    else:
        state, meta = ckpts.restore(latest, trainer.abstract_state(), meta=True)
        start = int(state["step"])
        fps = {info["config_fingerprint"]} | ({checkpoint.numeric_fingerprint(old_cfg)} if ext else set())
        same = meta.get("config_fingerprint") in fps or meta.get("extend_fingerprint") == extend.fingerprint(cfg)
        if start != latest or not same:
            ckpts.close()
            raise checkpoint.RunError(
                f"checkpoint {latest} in {out} does not match this run (step {start}, config differs?)"
            )
        saved = meta.get("data_positions")
        if mixed and saved is not None:
            # datasets that this resume adds to the mixture have drawn nothing and are not in the saved positions
            drawn = {n: c for n, c in mixture.steps_drawn(start).items() if c or n in saved}
            if saved != drawn:
                ckpts.close()
                raise checkpoint.RunError(
                    f"checkpoint {latest} in {out} was saved at dataset positions {saved}, but the weight "
                    f"schedule in run.json gives {drawn}"
                )
    data_iter = iter(mixture.dataset(start, pidx, pcount))  # the data position is the step (any process count)

    def save(n: int, state_n) -> None:
        meta = {
            "step": n,
            "dataset_fingerprint": dataset_info.get("fingerprint"),
            "config_fingerprint": info["config_fingerprint"],
            "extend_fingerprint": extend.fingerprint(cfg),
            "processes": pcount,
            "devices": jax.device_count(),
            **({"data_positions": mixture.steps_drawn(n)} if mixed else {}),
        }
        ckpts.save(n, state_n, meta=meta)

    peak, peak_src = metrics.device_peak_flops(override=cfg.peak_flops)
    acc = _Accum()

    evaluator = None
    if cfg.eval.every and lead:
        if pcount > 1:
            print("videopoet: warning: evaluation during training runs in one-process runs only", file=sys.stderr)
        else:
            evaluator = train_eval.Evaluator(cfg, trainer.model, manifest)

    def log_row(step_info: StepInfo) -> dict:
        row = _row(acc, step_info.metrics, peak, jax.device_count(), baseline, mixture, step_info.step)
        acc.reset()
        if heldout is not None and (step_info.step % cfg.eval.heldout_every == 0 or step_info.step == cfg.steps):
            row["heldout"] = heldout(step_info.state["params"])
        if evaluator is not None and (step_info.step % cfg.eval.every == 0 or step_info.step == cfg.steps):
            row["eval"] = evaluator(step_info.state["params"], step_info.step)
        return row

    run = Run(
        out,
        total_steps=cfg.steps,
        start_step=start,
        save=save,
        checkpoint_every=cfg.checkpoint_every,
        lead=lead,
        progress=cfg.progress,
        desc="train",
        panels=metrics.LOSS_PANELS
        + ((train_eval.HELDOUT_PANEL,) if heldout is not None else ())
        + ((train_eval.EVAL_PANEL,) if evaluator is not None else ()),
    )
    run.add_log_hook(log_row, every=cfg.log_every)
    if 0 < cfg.decay_start < cfg.steps:  # what an extension of this run goes back to (trainer/extend.py)
        decay_start = cfg.decay_start
        run.add_hook(lambda i: run.save(i.step, i.state) if i.step == decay_start else None)
    for hook in hooks:
        run.add_hook(hook)
    done = start
    with run:
        try:
            while done < cfg.steps:
                t0 = time.perf_counter()
                batch = next(data_iter)
                t1 = time.perf_counter()
                state, m = trainer.step(state, batch)
                loss = float(m["loss"])  # waits for the step
                m = jax.device_get(m)
                t2 = time.perf_counter()
                done += 1
                flops = metrics.step_flops(cfg.model, batch["tokens"].shape[1], batch["prefix_len"]) * pcount
                acc.add(m, batch, flops, mixture.plan.max_length, pcount)
                acc.data_s += t1 - t0
                acc.compute_s += t2 - t1
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {done}")
                run.show(loss=f"{loss:.3f}", group=batch["group"])
                if run.step_done(done, state, m):
                    break
        finally:
            ckpts.close()
    png = run.plot()
    last = {k: v for k, v in run.last_row.items() if k != "step"}
    return {
        "status": run.status,
        "step": done,
        "resumed_from": latest,
        "extension": ext.record() if ext else None,
        "init_from": source.record() if source else None,
        "last": last,
        "unigram_baseline": baseline,
        "run_dir": out,
        "loss_curve": png,
        "peak_flops": peak,
        "peak_source": peak_src,
        "checkpoint": run.saved_step,
        **({"datasets": mixture.summary(done), "weight_change": weight_change} if mixed else {}),
    }


_TRAINERS: dict[str, step.Trainer] = {}


def _trainer(cfg: TrainConfig) -> step.Trainer:
    """Compiled steps are reused within a process for the same numbers + devices (resume tests, sweeps)."""
    key = checkpoint.numeric_fingerprint(cfg) + repr(cfg.mesh) + repr(jax.devices())
    if key not in _TRAINERS:
        _TRAINERS.clear()
        _TRAINERS[key] = step.make_trainer(cfg)
    return _TRAINERS[key]


def _row(acc: _Accum, m: dict, peak: float, n_dev: int, baseline: float, mix, step: int) -> dict:
    wall = time.perf_counter() - acc.t0
    n = max(len(acc.losses), 1)
    compute = max(acc.compute_s, 1e-9)
    return {
        "loss": float(np.mean(acc.losses)),
        "losses": acc.losses,
        "tasks": metrics.per_task(acc.sums),
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
        **({"datasets": mix.records_drawn(step)} if isinstance(mix, data.DatasetMixture) else {}),
    }
