"""Device mesh (data, fsdp, tensor) and logical-axis rules -> shardings.

Parameters carry logical axis names (``nn.with_logical_partitioning`` in :mod:`.model`); the rules in
``MeshConfig.rules`` map them to mesh axes: by default the batch splits over (data, fsdp), weights'
``embed`` dimension over fsdp (ZeRO-3 style: each device holds a slice, gathered per layer), and
heads / mlp / vocab over tensor (Megatron style). Activations between blocks are constrained to
(batch, length, embed) by the same rules (``nn.with_logical_constraint``; they take effect because
``Trainer.step`` traces the step under ``jax.set_mesh``). The same code runs on one CPU, 8 fake CPU
devices or a pod; only the config changes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from videopoet.schemas.errors import ConfigError
from videopoet.trainer.config import MeshConfig

AXES = ("data", "fsdp", "tensor")


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if n_devices % known:
            raise ConfigError(f"mesh {sizes}: {n_devices} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = n_devices // known
    if int(np.prod(sizes)) != n_devices:
        raise ConfigError(
            f"mesh data={sizes[0]} fsdp={sizes[1]} tensor={sizes[2]} needs {int(np.prod(sizes))} devices, "
            f"there are {n_devices}"
        )
    return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A mesh over all devices; in a single process a fully specified smaller mesh uses the first devices."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = (cfg.data, cfg.fsdp, cfg.tensor)
    if -1 not in sizes and jax.process_count() == 1 and int(np.prod(sizes)) < len(devices):
        devices = devices[: int(np.prod(sizes))]
    shape = mesh_shape(cfg, len(devices))
    try:
        from jax.experimental import mesh_utils

        arr = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # noqa: BLE001 - fake / odd topologies: plain reshape
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, AXES)


def rules(cfg: MeshConfig) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """Flax logical-axis rules: ((logical name, mesh axes or None), ...)."""
    return tuple((name, tuple(axes) if axes else None) for name, axes in sorted(cfg.rules.items()))


def logical_shardings(specs, mesh: Mesh, cfg: MeshConfig):
    """A tree of logical PartitionSpecs -> NamedShardings on ``mesh``."""
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules(cfg)))


def batch_sharding(mesh: Mesh, cfg: MeshConfig, ndim: int = 2) -> NamedSharding:
    axes = tuple(cfg.rules.get("batch", ("data", "fsdp"))) or None
    return NamedSharding(mesh, PartitionSpec(axes, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict, mesh: Mesh, cfg: MeshConfig) -> dict:
    """This process's rows -> global jax.Arrays sharded over the batch axes."""
    out = {}
    for k, v in local.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1:
            out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, cfg, v.ndim), v)
    return out
