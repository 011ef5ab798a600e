"""Ahead-of-time compile of the real train step for a TPU slice this machine does not have.

``compile_report(cfg, "v5p-128")`` builds the run's :class:`~videopoet.trainer.step.Trainer` (model,
optimizer, frozen text tower, loss) on a mesh of the slice's *compile-only* devices
(``jax.experimental.topologies.get_topology_desc`` with the ``libtpu`` wheel, no TPU attached), lowers
its step with abstract arguments and compiles it with XLA:TPU. Nothing is materialized: parameters,
optimizer state, text-tower weights and the batch are ``jax.ShapeDtypeStruct`` s carrying the shardings
the run would use (the config's mesh and logical-axis rules). The compiler then answers what one chip
needs (``memory_analysis``: arguments, outputs, temporaries, generated code) and the step's FLOPs
(``cost_analysis``), so an out-of-memory configuration is caught before anyone pays for chips.

The batch is the run's largest: every step of a group has one sequence length (AGD), and the longest
group is found by the data layer's own plan (:func:`videopoet.trainer.data.make_plan`) over records of
the dataset's clip geometry: the dataset's manifest when one is given, else the pipeline preset whose
video tokenizer matches the model's visual vocabulary (``paper`` for 300m/1b/8b: 17 frames of 128x224
-> 5x28x16 latent tokens; inpainting with its condition stream is the longest layout).

When XLA:TPU refuses the program for lack of memory (``RESOURCE_EXHAUSTED``), the report says it does
not fit with the compiler's own figure instead of failing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import os
import re
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp

from videopoet.infra import accelerators
from videopoet.schemas.errors import ConfigError, VideoPoetError
from videopoet.trainer import data, sharding, step, tasks
from videopoet.trainer.config import TrainConfig

GIB = 2**30


class AotError(VideoPoetError):
    """An ahead-of-time compile that cannot be set up (libtpu missing, a topology that is not a TPU slice)."""


@dataclasses.dataclass(frozen=True)
class AotReport:
    """What the compiler says one step of ``config`` needs on each chip of ``topology``."""

    config: str  # the config's name (preset)
    topology: str  # canonical slice name (v5p-128)
    jax_topology: str  # the topology name libtpu compiled for (v5p:4x4x4)
    device_kind: str  # JAX's device kind of the compile-only devices
    chips: int
    mesh: dict[str, int]  # data, fsdp, tensor
    batch_size: int  # global
    seq_len: int  # the longest group's sequence length
    params: int  # model parameters (the text tower is frozen and not counted)
    argument_bytes: int  # per chip: state, batch and text-tower weights
    output_bytes: int  # per chip: new state and metrics
    alias_bytes: int  # per chip: outputs that reuse donated argument buffers
    temp_bytes: int  # per chip: activations, gradients, collectives' buffers
    code_bytes: int  # per chip: generated code
    hbm_bytes: int  # per chip (the accelerator catalogue's published figure)
    fits: bool
    flops_per_chip: float  # the compiler's count for one chip's program (0 when it did not compile)
    compile_s: float
    oom: str = ""  # the compiler's out-of-memory message when it refused the program
    oom_bytes: int = 0  # what the compiler said the program needs per chip when it refused it

    @property
    def total_bytes(self) -> int:
        """Peak bytes per chip: arguments + outputs not aliased to arguments + temporaries + code (or, when
        the compiler refused the program, what it said the program needs)."""
        if self.oom:
            return self.oom_bytes
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    @property
    def flops_per_step(self) -> float:
        return self.flops_per_chip * self.chips

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(
            total_bytes=self.total_bytes,
            flops_per_step=self.flops_per_step,
            tokens_per_step=self.tokens_per_step,
            gib_per_chip={
                k: round(v / GIB, 3)
                for k, v in (
                    ("arguments", self.argument_bytes),
                    ("outputs", self.output_bytes),
                    ("aliased", self.alias_bytes),
                    ("temporaries", self.temp_bytes),
                    ("code", self.code_bytes),
                    ("total", self.total_bytes),
                    ("hbm", self.hbm_bytes),
                )
            },
        )
        return d

    def text(self) -> str:
        mesh = " ".join(f"{k}={v}" for k, v in self.mesh.items())
        head = (
            f"{self.config} on {self.topology} ({self.jax_topology}, {self.chips} x {self.device_kind}), "
            f"mesh {mesh}, batch {self.batch_size} x {self.seq_len} tokens"
        )
        rows = [
            ("arguments", self.argument_bytes),
            ("outputs", self.output_bytes),
            ("aliased", -self.alias_bytes),
            ("temporaries", self.temp_bytes),
            ("code", self.code_bytes),
            ("total", self.total_bytes),
            ("HBM", self.hbm_bytes),
        ]
        if self.oom:  # the compiler stopped at the first figure over the limit: only that figure is known
            rows = [("needs", self.oom_bytes), ("HBM", self.hbm_bytes)]
        lines = [head, "  per chip       GiB"]
        lines += [f"  {name:<12} {b / GIB:8.2f}" for name, b in rows]
        verdict = "yes" if self.fits else "NO"
        lines.append(f"  fits         {verdict}" + (f" ({self.oom})" if self.oom else ""))
        if self.flops_per_chip:
            lines.append(
                f"  step         {self.flops_per_step / 1e12:,.0f} TFLOP ({self.flops_per_chip / 1e12:,.1f} per chip)"
            )
        lines.append(f"  compiled in  {self.compile_s:.0f} s")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- the slice
def slice_of(name: str) -> accelerators.Accelerator:
    """A TPU slice by catalogue name (``v5p-128``, ``v5e-16``, ``v6e-8x8``) or libtpu topology name
    (``v5e:4x4``)."""
    raw = str(name).strip().lower()
    if ":" in raw:
        gen, _, shape = raw.partition(":")
        raw = f"{gen}-{shape}"
    try:
        acc = accelerators.lookup(raw)
    except accelerators.UnknownAcceleratorError as e:
        raise AotError(f"topology {name!r}: {e}") from None
    if acc.kind != "tpu":
        raise AotError(f"topology {name!r} is a GPU node type; the ahead-of-time compile is for TPU slices")
    return acc


def libtpu_path() -> str:
    """Where libtpu is (``TPU_LIBRARY_PATH`` or the ``libtpu`` package); one line when it is missing."""
    env = os.environ.get("TPU_LIBRARY_PATH")
    if env and os.path.isfile(env):
        return env
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "libtpu.so")
        if os.path.isfile(path):
            return path
    raise AotError(
        "libtpu is not installed (the TPU compiler): pip install 'videopoet[tpu]' "
        "(or set TPU_LIBRARY_PATH to a libtpu.so)"
    )


@contextlib.contextmanager
def _stderr_to(path: str):
    """Send file descriptor 2 to ``path`` (libtpu's C++ start-up warnings about the missing TPU VM
    environment would otherwise fill the terminal)."""
    saved = os.dup(2)
    try:
        with open(path, "w") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def topology_devices(acc: accelerators.Accelerator) -> list:
    """The slice's compile-only devices (libtpu's topology description; no TPU needed)."""
    from jax.experimental import topologies

    libtpu_path()
    # libtpu takes a machine-wide lock file on load, meant for processes that drive the chips; compiling
    # for compile-only devices drives none, so several such processes (or one beside a TPU job) may run
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "libtpu.log")
        try:
            with _stderr_to(log):
                topo = topologies.get_topology_desc(**acc.topology_kwargs())
        except Exception as e:  # noqa: BLE001 - libtpu's errors are runtime errors of several types
            raise AotError(f"libtpu cannot describe {acc.jax_topology}: {str(e).splitlines()[0]}") from None
    return list(topo.devices)


# ----------------------------------------------------------------------------------------- the batch
def _video_config(spec: str):
    from videopoet.tokenizers.magvit2.config import load_magvit_config

    return load_magvit_config("small" if spec == "default" else spec)


def _audio_config(spec: str):
    from videopoet.tokenizers.soundstream.config import load_soundstream_config

    return load_soundstream_config("small" if spec == "default" else spec)


def geometry(cfg: TrainConfig, manifest: dict | None = None):
    """(pipeline config, video tokenizer config, audio tokenizer config) of the data the run trains on: the
    dataset's (its manifest's lineage) when given, else the pipeline preset whose video tokenizer gives the
    model's visual vocabulary."""
    from videopoet.pipelines.config import PRESETS, PipelineConfig
    from videopoet.schemas.config import from_dict
    from videopoet.tokenizers.magvit2.config import MagvitConfig
    from videopoet.tokenizers.soundstream.config import SoundStreamConfig

    lineage = (manifest or {}).get("lineage") or {}
    if lineage.get("pipeline_config"):
        toks = lineage.get("tokenizers") or {}
        try:
            pcfg = from_dict(PipelineConfig, lineage["pipeline_config"])
            vcfg = from_dict(MagvitConfig, (toks.get("video") or {}).get("config") or {})
            acfg = from_dict(SoundStreamConfig, (toks.get("audio") or {}).get("config") or {})
        except (VideoPoetError, ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"the dataset's manifest does not describe its clip geometry: {e}") from None
        return pcfg, vcfg, acfg
    for name in ("paper", "small", "tiny"):
        pcfg = PRESETS[name]()
        vcfg = _video_config(pcfg.video_tokenizer)
        if 2**vcfg.lfq_bits == cfg.model.visual_size:
            return pcfg, vcfg, _audio_config(pcfg.audio_tokenizer)
    pcfg = PRESETS["paper"]()
    return pcfg, _video_config(pcfg.video_tokenizer), _audio_config(pcfg.audio_tokenizer)


def record_infos(pcfg, vcfg, acfg) -> list[tasks.RecordInfo]:
    """One record per clip shape the pipeline makes: each bucket's clip (with audio and every condition
    stream a clip can carry) and, with images on, each bucket's image."""
    audio = (acfg.levels_used, acfg.frames_for(pcfg.audio_samples)) if pcfg.audio else None
    if pcfg.condition_mode == "all":
        condition_sets = [tuple(sorted(pcfg.conditions))]
    else:
        condition_sets = [(c,) for c in pcfg.conditions] or [()]
    infos = []
    for bucket, (h, w) in pcfg.buckets().items():
        portrait = bucket == "portrait"
        for conds in condition_sets:
            infos.append(tasks.RecordInfo(vcfg.latent_shape(pcfg.clip_frames, h, w), audio, True, conds, portrait))
        if pcfg.images:
            infos.append(tasks.RecordInfo(vcfg.latent_shape(1, h, w), None, True, (), portrait))
    return infos


def longest_sequence(cfg: TrainConfig, manifest: dict | None = None) -> int:
    """The sequence length of the run's longest AGD group (its mixture's tasks on its data's clip shapes)."""
    return data.make_plan(record_infos(*geometry(cfg, manifest)), cfg).max_length


def abstract_batch(cfg: TrainConfig, mesh, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch of one step (the keys and dtypes of :func:`videopoet.trainer.data.collate`) as
    abstract arrays split over the mesh's batch axes."""
    b, t = cfg.batch_size, cfg.data.text_len
    shapes = {
        "tokens": ((b, seq_len), jnp.int32),
        "valid": ((b, seq_len), jnp.bool_),
        "text_index": ((b, seq_len), jnp.int32),
        "text_ids": ((b, t), jnp.int32),
        "text_mask": ((b, t), jnp.int32),
        "prefix_len": ((b,), jnp.int32),
        "targets": ((b, seq_len), jnp.int32),
        "loss_mask": ((b, seq_len), jnp.bool_),
        "target_changed": ((b, seq_len), jnp.bool_),
        "task_id": ((b,), jnp.int32),
    }
    assert set(shapes) == set(data.BATCH_KEYS)
    return {
        k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding.batch_sharding(mesh, cfg.mesh, len(shape)))
        for k, (shape, dtype) in shapes.items()
    }


# ----------------------------------------------------------------------------------------- compile
_OOM_FIGURES = (  # the forms XLA:TPU's out-of-memory messages take
    re.compile(r"Used\s+([\d.]+)\s*([KMGT]?)i?B?\s+of\s+[\d.]+\s*[KMGT]?i?B?\s+hbm", re.IGNORECASE),
    re.compile(r"memory required for [^(]*\(([\d.]+)\s*([KMGT]?)i?B?\)", re.IGNORECASE),
)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_oom(message: str) -> tuple[int | None, str]:
    """(bytes the program needs per chip, one line to show) from XLA:TPU's RESOURCE_EXHAUSTED message."""
    used = None
    for pattern in _OOM_FIGURES:
        m = pattern.search(message)
        if m:
            used = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
            break
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    line = next((x for x in lines if "hbm" in x.lower()), lines[0] if lines else "RESOURCE_EXHAUSTED")
    return used, line[:300]


@contextlib.contextmanager
def _compile_settings(effort: float | None):
    """For the compiles inside: XLA's execution-time optimization effort (-1 .. 1; None keeps XLA's default)
    and no persistent compilation cache (an executable for compile-only devices cannot be loaded back, and
    a report must come from a compile)."""
    settings = {"jax_enable_compilation_cache": False}
    if effort is not None:
        settings["jax_exec_time_optimization_effort"] = float(effort)
    old = {k: getattr(jax.config, k) for k in settings}
    for k, v in settings.items():
        jax.config.update(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)


def compile_report(
    cfg: TrainConfig,
    topology: str,
    seq_len: int | None = None,
    manifest: dict | None = None,
    effort: float | None = None,
) -> AotReport:
    """Compile ``cfg``'s train step for one slice of ``topology`` and report what a chip needs.

    ``seq_len``: the batch's sequence length (default: the longest group's, :func:`longest_sequence`).
    ``effort``: XLA's execution-time optimization effort in [-1, 1] (default: XLA's, what the run itself
    compiles); -1 compiles several times faster, with per-chip figures within a few percent.
    Bad input (an unknown topology, a mesh that does not use exactly the slice's chips, a batch its batch
    axes cannot split, libtpu missing) raises a one-line :class:`~videopoet.schemas.errors.VideoPoetError`.
    """
    acc = slice_of(topology)
    devices = topology_devices(acc)
    sharding.mesh_shape(cfg.mesh, len(devices))  # the mesh must use exactly the slice's chips
    mesh = sharding.make_mesh(cfg.mesh, devices=devices)
    step.check_batch_split(cfg, mesh)
    seq_len = longest_sequence(cfg, manifest) if seq_len is None else int(seq_len)
    if seq_len < 2:
        raise ConfigError(f"seq_len must be >= 2, got {seq_len}")

    trainer = step.make_trainer(cfg, mesh=mesh, text=step.abstract_text_tower(cfg))
    abstract = jax.eval_shape(trainer.init_fn, jax.random.PRNGKey(0))
    state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, trainer.state_shardings
    )
    params = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(state["params"]))
    batch = abstract_batch(cfg, mesh, seq_len)

    t0 = time.perf_counter()
    oom, used = "", None
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            _stderr_to(os.path.join(tmp, "libtpu.log")),
            _compile_settings(effort),
        ):
            compiled = trainer.lower(state, batch).compile()
    except Exception as e:  # noqa: BLE001 - XLA raises JaxRuntimeError / XlaRuntimeError by version
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        used, oom = parse_oom(str(e))
        compiled = None
    seconds = time.perf_counter() - t0

    common = dict(
        config=cfg.name,
        topology=acc.name,
        jax_topology=acc.jax_topology,
        device_kind=devices[0].device_kind,
        chips=len(devices),
        mesh={k: int(v) for k, v in mesh.shape.items()},
        batch_size=cfg.batch_size,
        seq_len=seq_len,
        params=int(params),
        hbm_bytes=acc.hbm_bytes,
        compile_s=round(seconds, 1),
    )
    if compiled is None:
        return AotReport(
            **common,
            argument_bytes=0,
            output_bytes=0,
            alias_bytes=0,
            temp_bytes=0,
            code_bytes=0,
            fits=False,
            flops_per_chip=0.0,
            oom=oom,
            oom_bytes=used or 0,
        )
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    report = AotReport(
        **common,
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes),
        fits=True,
        flops_per_chip=float((cost or {}).get("flops", 0.0)),
    )
    return dataclasses.replace(report, fits=report.total_bytes <= report.hbm_bytes)
