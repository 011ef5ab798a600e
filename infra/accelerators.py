"""The accelerator catalogue: TPU slices and GPU nodes as data, and ``lookup(name)``.

One table serves every consumer: the GKE manifests (accelerator label, topology, machine type, hosts
per slice, chips per host), the ahead-of-time compile (the ``jax.experimental.topologies`` name and
the chip's HBM) and MFU (peak bf16 FLOP/s per chip, matched by JAX's ``device_kind``).

Names
    TPU ``v4-N`` and ``v5p-N`` count TensorCores (2 per chip: ``v5p-128`` is 64 chips, 4x4x4);
    ``v5e-N`` (also ``v5litepod-N``) and ``v6e-N`` count chips (``v5e-16`` is 16 chips, 4x4). A slice
    may also be named by its topology (``v5p-4x4x8``, ``v6e-8x8``). GPUs are named per node type
    (``h100-80gb``, ``h100-mega-80gb``, ``h200-141gb``, ``a100-40gb``, ``a100-80gb``; ``h100`` and
    ``h200`` are aliases; a trailing ``-8`` GPUs per node, as xpk writes them, is accepted).
    ``lookup(name, count)`` takes the number of slices (TPU multislice) or nodes (GPU) separately.

Sources (published figures, read on the vendors' pages; nothing here is measured)
    * Per-chip HBM and peak bf16: Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4,
      /v5e, /v5p, /v6e): v4 32 GiB / 275 TFLOP/s, v5e 16 GB / 197, v5p 95 GB / 459, v6e 32 GB / 918.
      HBM is kept as the published figure read as GiB (TPU HBM stacks are binary-sized; the
      capacity the runtime leaves to a program is slightly lower). HBM bandwidth per chip from the
      same pages: v4 1,228 GB/s, v5e 819, v5p 2,765, v6e 1,640.
    * Slice shapes, hosts per slice, GKE accelerator labels and machine types: the Cloud TPU / GKE
      "plan TPUs" tables and xpk's system characteristics (AI-Hypercomputer/xpk,
      ``core/system_characteristics.py``), whose conventions MaxText users know: one host per
      1-chip slice, else 4 chips per host (``ct5lp-hightpu-4t`` also for the 8-chip v5e slice).
    * GPUs: NVIDIA data sheets (dense bf16 tensor throughput without sparsity: H100/H200 SXM 989
      TFLOP/s, A100 312; HBM bandwidth H100 SXM 3.35 TB/s, H200 4.8, A100 40 GB 1.555, 80 GB
      2.039) and GKE's accelerator labels / A2, A3 machine types (8 GPUs per node).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re

from videopoet.schemas.errors import ConfigError


class UnknownAcceleratorError(ConfigError):
    """A name that is not in the catalogue, or a slice size a generation does not offer."""


@dataclasses.dataclass(frozen=True)
class Generation:
    """What every slice (or node) of one accelerator type shares."""

    key: str  # canonical prefix: v4, v5e, v5p, v6e, h100-80gb, ...
    kind: str  # tpu | gpu
    hbm_gib: float  # per chip
    peak_bf16_flops: float  # per chip, dense
    hbm_bytes_per_s: float  # per chip, peak HBM bandwidth (the bound of memory-bound work such as sampling)
    gke_accelerator: str  # cloud.google.com/gke-tpu-accelerator or cloud.google.com/gke-accelerator value
    machine_type: str  # multi-host (TPU) or the node (GPU) machine type
    device_kinds: tuple[str, ...]  # lower-case substrings of jax Device.device_kind
    cores_per_chip: int = 1  # TensorCores per chip; names of v4 / v5p count cores
    single_chip_machine: str = ""  # TPU machine type of the 1-chip slice
    topologies: tuple[str, ...] = ()  # TPU slice shapes offered
    jax_name: str = ""  # TPU generation as libtpu's topology names spell it (``v5e:4x4``)
    jax_chip_config: str = ""  # chip_config_name for get_topology_desc ("megacore": one device per chip)
    gpus_per_node: int = 0
    aliases: tuple[str, ...] = ()
    api_prefix: str = ""  # the Cloud TPU API's accelerator-type prefix where it differs (v5litepod)

    @property
    def dims(self) -> int:
        return len(self.topologies[0].split("x")) if self.topologies else 0


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """One slice (TPU) or node (GPU) type, times ``count`` slices / nodes."""

    name: str  # canonical: v5p-128, v5e-16, h100-80gb
    kind: str  # tpu | gpu
    generation: str  # v4 | v5e | v5p | v6e | h100-80gb | ...
    chips: int  # per slice (TPU) or per node (GPU)
    hosts: int  # per slice (TPU); 1 per node (GPU)
    chips_per_host: int
    topology: str  # TPU slice shape (4x4x4); "" for GPUs
    hbm_gib: float  # per chip
    peak_bf16_flops: float  # per chip
    gke_accelerator: str
    machine_type: str
    count: int = 1  # slices (TPU multislice) or nodes (GPU)
    jax_topology: str = ""  # topology_name for jax.experimental.topologies.get_topology_desc
    jax_chip_config: str = ""
    tpu_api_type: str = ""  # the Cloud TPU API's --accelerator-type (v5litepod-16); "" for GPUs

    @property
    def total_chips(self) -> int:
        return self.chips * self.count

    @property
    def total_hosts(self) -> int:
        return self.hosts * self.count

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib * 2**30)

    @property
    def gke_topology(self) -> str:
        """The ``cloud.google.com/gke-tpu-topology`` node selector value (TPU only)."""
        return self.topology

    def topology_kwargs(self) -> dict[str, str]:
        """Keyword arguments of ``get_topology_desc`` for one slice of this type."""
        kw = {"topology_name": self.jax_topology, "platform": "tpu"}
        if self.jax_chip_config:
            kw["chip_config_name"] = self.jax_chip_config
        return kw


# ----------------------------------------------------------------------------------------------- data
_V4_SHAPES = ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8", "8x8x12", "8x8x16", "8x16x16")
_2D_SHAPES = ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16")  # v5e / v6e: 256-chip pods, 2D torus
_V5P_POD_CHIPS = 8960


def _v5p_shapes() -> tuple[str, ...]:
    """v5p: the sub-cube shapes, then every AxBxC (A <= B <= C, multiples of 4: whole 4x4x4 cubes)
    within one pod."""
    small = ["2x2x1", "2x2x2", "2x2x4", "2x4x4"]
    sides = range(4, _V5P_POD_CHIPS // 16 + 1, 4)
    cubes = [(a, b, c) for a, b, c in itertools.combinations_with_replacement(sides, 3) if a * b * c <= _V5P_POD_CHIPS]
    return tuple(small + [f"{a}x{b}x{c}" for a, b, c in sorted(cubes, key=lambda s: (math.prod(s), s))])


GENERATIONS: dict[str, Generation] = {
    g.key: g
    for g in (
        Generation(
            key="v4",
            kind="tpu",
            hbm_gib=32,
            peak_bf16_flops=275e12,
            hbm_bytes_per_s=1228e9,
            gke_accelerator="tpu-v4-podslice",
            machine_type="ct4p-hightpu-4t",
            device_kinds=("tpu v4",),
            cores_per_chip=2,
            topologies=_V4_SHAPES,
            jax_name="v4",
            jax_chip_config="megacore",
        ),
        Generation(
            key="v5e",
            kind="tpu",
            hbm_gib=16,
            peak_bf16_flops=197e12,
            hbm_bytes_per_s=819e9,
            gke_accelerator="tpu-v5-lite-podslice",
            machine_type="ct5lp-hightpu-4t",
            single_chip_machine="ct5lp-hightpu-1t",
            device_kinds=("tpu v5 lite", "tpu v5e"),
            topologies=_2D_SHAPES,
            jax_name="v5e",
            aliases=("v5litepod",),
            api_prefix="v5litepod",
        ),
        Generation(
            key="v5p",
            kind="tpu",
            hbm_gib=95,
            peak_bf16_flops=459e12,
            hbm_bytes_per_s=2765e9,
            gke_accelerator="tpu-v5p-slice",
            machine_type="ct5p-hightpu-4t",
            device_kinds=("tpu v5p", "tpu v5"),
            cores_per_chip=2,
            topologies=_v5p_shapes(),
            jax_name="v5p",
        ),
        Generation(
            key="v6e",
            kind="tpu",
            hbm_gib=32,
            peak_bf16_flops=918e12,
            hbm_bytes_per_s=1640e9,
            gke_accelerator="tpu-v6e-slice",
            machine_type="ct6e-standard-4t",
            single_chip_machine="ct6e-standard-1t",
            device_kinds=("tpu v6 lite", "tpu v6e"),
            topologies=_2D_SHAPES,
            jax_name="v6e",
        ),
        Generation(
            key="h100-80gb",
            kind="gpu",
            hbm_gib=80,
            peak_bf16_flops=989e12,
            hbm_bytes_per_s=3.35e12,
            gke_accelerator="nvidia-h100-80gb",
            machine_type="a3-highgpu-8g",
            device_kinds=("h100",),
            gpus_per_node=8,
            aliases=("h100",),
        ),
        Generation(
            key="h100-mega-80gb",
            kind="gpu",
            hbm_gib=80,
            peak_bf16_flops=989e12,
            hbm_bytes_per_s=3.35e12,
            gke_accelerator="nvidia-h100-mega-80gb",
            machine_type="a3-megagpu-8g",
            device_kinds=(),
            gpus_per_node=8,
        ),
        Generation(
            key="h200-141gb",
            kind="gpu",
            hbm_gib=141,
            peak_bf16_flops=989e12,
            hbm_bytes_per_s=4.8e12,
            gke_accelerator="nvidia-h200-141gb",
            machine_type="a3-ultragpu-8g",
            device_kinds=("h200",),
            gpus_per_node=8,
            aliases=("h200",),
        ),
        Generation(
            key="a100-40gb",
            kind="gpu",
            hbm_gib=40,
            peak_bf16_flops=312e12,
            hbm_bytes_per_s=1555e9,
            gke_accelerator="nvidia-tesla-a100",
            machine_type="a2-highgpu-8g",
            device_kinds=("a100",),
            gpus_per_node=8,
        ),
        Generation(
            key="a100-80gb",
            kind="gpu",
            hbm_gib=80,
            peak_bf16_flops=312e12,
            hbm_bytes_per_s=2039e9,
            gke_accelerator="nvidia-a100-80gb",
            machine_type="a2-ultragpu-8g",
            device_kinds=(),
            gpus_per_node=8,
        ),
    )
}


# ----------------------------------------------------------------------------------------------- lookup
def _chips_of(topology: str) -> int:
    return math.prod(int(x) for x in topology.split("x"))


def _default_topology(gen: Generation, chips: int) -> str | None:
    """The most cube-like offered shape with this many chips (v5p-128 -> 4x4x4)."""
    shapes = [t for t in gen.topologies if _chips_of(t) == chips]
    return min(shapes, key=lambda t: (max(int(x) for x in t.split("x")), t)) if shapes else None


def slice_names(gen: Generation) -> list[str]:
    """The canonical names of a TPU generation's slices, smallest first (v5p-8, v5p-16, ...)."""
    counts = sorted({_chips_of(t) for t in gen.topologies})
    return [f"{gen.key}-{c * gen.cores_per_chip}" for c in counts]


def valid_names() -> list[str]:
    """Every name form ``lookup`` accepts, briefly (for error messages and --help)."""
    out = []
    for g in GENERATIONS.values():
        if g.kind == "tpu":
            names = slice_names(g)
            out.append(f"{names[0]}..{names[-1]}" if len(names) > 2 else ", ".join(names))
        else:
            out.append(g.key)
    return out


def _tpu(gen: Generation, topology: str, count: int) -> Accelerator:
    chips = _chips_of(topology)
    per_host = 1 if chips == 1 else 4
    machine = gen.single_chip_machine if chips == 1 and gen.single_chip_machine else gen.machine_type
    return Accelerator(
        name=f"{gen.key}-{chips * gen.cores_per_chip}",
        kind="tpu",
        generation=gen.key,
        chips=chips,
        hosts=chips // per_host,
        chips_per_host=per_host,
        topology=topology,
        hbm_gib=gen.hbm_gib,
        peak_bf16_flops=gen.peak_bf16_flops,
        gke_accelerator=gen.gke_accelerator,
        machine_type=machine,
        count=count,
        jax_topology=f"{gen.jax_name}:{topology}",
        jax_chip_config=gen.jax_chip_config,
        tpu_api_type=f"{gen.api_prefix or gen.key}-{chips * gen.cores_per_chip}",
    )


def _generation(prefix: str) -> Generation | None:
    for g in GENERATIONS.values():
        if prefix == g.key or prefix in g.aliases:
            return g
    return None


def lookup(name: str, count: int = 1) -> Accelerator:
    """``"v5p-128"``, ``"v5e-16"``, ``"v6e-8x8"``, ``"h100-80gb"``, ... -> :class:`Accelerator`.

    ``count``: slices (TPU multislice) or nodes (GPU). Unknown names and sizes a generation does not
    offer raise :class:`UnknownAcceleratorError` with the valid names in one line.
    """
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"accelerator count must be an integer >= 1, got {count!r}")
    raw = str(name).strip().lower()
    gen = _generation(raw)
    if gen is None:
        m = re.fullmatch(r"(.+?)-(8)", raw)  # xpk's GPU names end in the GPUs per node
        gen = _generation(m.group(1)) if m else None
        if gen is not None and gen.kind != "gpu":
            gen = None
    if gen is not None and gen.kind == "gpu":
        return Accelerator(
            name=gen.key,
            kind="gpu",
            generation=gen.key,
            chips=gen.gpus_per_node,
            hosts=1,
            chips_per_host=gen.gpus_per_node,
            topology="",
            hbm_gib=gen.hbm_gib,
            peak_bf16_flops=gen.peak_bf16_flops,
            gke_accelerator=gen.gke_accelerator,
            machine_type=gen.machine_type,
            count=count,
        )
    m = re.fullmatch(r"([a-z0-9]+)-(\d+(?:x\d+)*)", raw)
    gen = _generation(m.group(1)) if m else None
    if gen is None or gen.kind != "tpu":
        raise UnknownAcceleratorError(f"unknown accelerator {name!r}; valid: {', '.join(valid_names())}")
    size = m.group(2)
    if "x" in size:
        if size not in gen.topologies:
            raise UnknownAcceleratorError(
                f"{gen.key} has no {size} slice; valid: {', '.join(gen.topologies[:12])}"
                f"{', ...' if len(gen.topologies) > 12 else ''}"
            )
        return _tpu(gen, size, count)
    n = int(size)
    unit = "TensorCores (2 per chip)" if gen.cores_per_chip > 1 else "chips"
    topology = _default_topology(gen, n // gen.cores_per_chip) if n % gen.cores_per_chip == 0 else None
    if topology is None:
        names = slice_names(gen)
        shown = ", ".join(names[:10]) + (f", ... {names[-1]}" if len(names) > 10 else "")
        raise UnknownAcceleratorError(f"{name!r}: {gen.key} names count {unit}; valid: {shown}")
    return _tpu(gen, topology, count)


def generation_for_device_kind(device_kind: str) -> Generation | None:
    """The generation of a JAX ``device_kind`` ("TPU v5 lite", "NVIDIA H100 80GB HBM3"), or None."""
    kind = device_kind.lower()
    best = None
    for g in GENERATIONS.values():
        for sub in g.device_kinds:  # the longest match wins ("tpu v5 lite" over "tpu v5")
            if sub in kind and (best is None or len(sub) > best[0]):
                best = (len(sub), g)
    return best[1] if best else None


def peak_flops_for_device_kind(device_kind: str) -> tuple[float, str] | None:
    """(peak bf16 FLOP/s, generation) for a JAX ``device_kind``."""
    g = generation_for_device_kind(device_kind)
    return (g.peak_bf16_flops, g.key) if g else None


def hbm_bandwidth_for_device_kind(device_kind: str) -> tuple[float, str] | None:
    """(peak HBM bytes/s per chip, generation) for a JAX ``device_kind``."""
    g = generation_for_device_kind(device_kind)
    return (g.hbm_bytes_per_s, g.key) if g else None
