"""Sharding: FSDP and tensor parallelism on the 8 fake CPU devices give the 1-device losses."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from videopoet.trainer import data, sharding, step, synthetic
from videopoet.trainer.config import load_train_config

BASE = ["batch_size=8", "steps=2", "data.mixture={t2v: 1.0}", "data.curriculum=false"]


def _losses(mesh_ovr, steps=2):
    cfg = load_train_config("tiny", BASE + mesh_ovr)
    mix = data.Mixture(synthetic.make_records(16, cfg.model.vocab), cfg)
    tr = step.make_trainer(cfg)
    state = tr.init()
    out = []
    for s in range(steps):
        state, m = tr.step(state, mix.global_batch(s))
        out.append(float(m["loss"]))
    return out, state, tr


@pytest.fixture(scope="module")
def reference():
    assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
    return _losses(["mesh.data=1"])[0]


@pytest.mark.parametrize(
    "mesh",
    [
        ["mesh.data=-1"],  # 8-way data parallel
        ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"],  # data + FSDP + tensor
        pytest.param(["mesh.data=2", "mesh.fsdp=4"], marks=pytest.mark.slow),  # FSDP
        pytest.param(["mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"], marks=pytest.mark.slow),
    ],
)
def test_sharded_losses_match_one_device(reference, mesh):
    losses, state, tr = _losses(mesh)
    np.testing.assert_allclose(losses, reference, rtol=2e-5, atol=2e-5)
    assert tr.mesh.devices.size == 8
    emb = state["params"]["embed"]["embedding"]
    fsdp, tensor = tr.mesh.shape["fsdp"], tr.mesh.shape["tensor"]
    assert emb.sharding.spec == P(
        "tensor" if tensor > 1 else None, "fsdp" if fsdp > 1 else None
    ) or emb.sharding.spec == P("tensor", "fsdp")
    shard = emb.addressable_shards[0].data.shape
    assert shard == (emb.shape[0] // tensor, emb.shape[1] // fsdp)
    mu = state["opt_state"][1][0].mu["embed"]["embedding"]  # Adam moments sharded like the params
    assert mu.addressable_shards[0].data.shape == shard


def test_activation_constraints_reach_the_step():
    """The model's nn.with_logical_constraint calls become sharding constraints in the compiled step
    (flax drops them when the step is traced with no mesh set)."""
    cfg = load_train_config("tiny", BASE + ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"])
    mix = data.Mixture(synthetic.make_records(16, cfg.model.vocab), cfg)
    tr = step.make_trainer(cfg)
    state, batch = tr.init(), mix.global_batch(0)

    def constraints(lowered) -> int:  # Shardy's op, or GSPMD's custom call
        text = lowered.as_text()
        return text.count("sdy.sharding_constraint") + text.count("@Sharding")

    with_mesh = constraints(tr.lower(state, batch))
    without = constraints(tr.step_fn.lower(state, sharding.global_batch(batch, tr.mesh, cfg.mesh), tr.text.params))
    assert with_mesh >= 2 * cfg.model.layers and without == 0, (with_mesh, without)  # per block, forward and back


def test_mesh_shape_errors():
    from videopoet.schemas.errors import ConfigError
    from videopoet.trainer.config import MeshConfig

    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
    with pytest.raises(ConfigError, match="not divisible"):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=3), 8)


@pytest.mark.parametrize("preset", ["300m", "8b"])
def test_paper_presets_shard_every_large_weight_over_fsdp(preset):
    import math

    import flax.linen as nn

    from videopoet.trainer import model
    from videopoet.trainer.config import load_model_config

    cfg = load_train_config(preset, ["mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2"])
    mesh = sharding.make_mesh(cfg.mesh)
    abstract = model.abstract_params(cfg.model)
    shardings = sharding.logical_shardings(nn.get_partition_spec(abstract), mesh, cfg.mesh)
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(abstract))
    total = sum(math.prod(x.shape) for x in leaves)
    per_device = sum(
        math.prod(s.shard_shape(x.shape)) for x, s in zip(leaves, jax.tree_util.tree_leaves(shardings), strict=True)
    )
    # everything is split 8 ways except norms/biases and the text projection (fsdp only): < 1 % extra
    assert total / 8 <= per_device < total / 8 * 1.01, (per_device, total)
    assert load_model_config(preset).remat == "full"
