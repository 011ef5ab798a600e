"""The accelerator catalogue: slice math, name round trips, published figures, bad names."""

from __future__ import annotations

import math

import pytest

from videopoet.infra import accelerators
from videopoet.schemas.errors import ConfigError


def _all_tpu_slices():
    for gen in accelerators.GENERATIONS.values():
        if gen.kind == "tpu":
            for name in accelerators.slice_names(gen):
                yield accelerators.lookup(name)


def test_slice_math_holds_for_every_tpu_slice():
    n = 0
    for acc in _all_tpu_slices():
        n += 1
        assert acc.hosts * acc.chips_per_host == acc.chips, acc
        assert math.prod(int(x) for x in acc.topology.split("x")) == acc.chips, acc
        assert acc.jax_topology == f"{acc.generation}:{acc.topology}"
        cores = acc.chips * accelerators.GENERATIONS[acc.generation].cores_per_chip
        assert acc.name == f"{acc.generation}-{cores}"
    assert n > 30


@pytest.mark.parametrize(
    "name,canonical,chips,hosts,topology,label,machine",
    [
        ("v5p-128", "v5p-128", 64, 16, "4x4x4", "tpu-v5p-slice", "ct5p-hightpu-4t"),
        ("v5p-8", "v5p-8", 4, 1, "2x2x1", "tpu-v5p-slice", "ct5p-hightpu-4t"),
        ("v5e-16", "v5e-16", 16, 4, "4x4", "tpu-v5-lite-podslice", "ct5lp-hightpu-4t"),
        ("v5litepod-256", "v5e-256", 256, 64, "16x16", "tpu-v5-lite-podslice", "ct5lp-hightpu-4t"),
        ("v5e-1", "v5e-1", 1, 1, "1x1", "tpu-v5-lite-podslice", "ct5lp-hightpu-1t"),
        ("v6e-256", "v6e-256", 256, 64, "16x16", "tpu-v6e-slice", "ct6e-standard-4t"),
        ("V6E-8x8", "v6e-64", 64, 16, "8x8", "tpu-v6e-slice", "ct6e-standard-4t"),
        ("v4-32", "v4-32", 16, 4, "2x2x4", "tpu-v4-podslice", "ct4p-hightpu-4t"),
        ("v4-4096", "v4-4096", 2048, 512, "8x16x16", "tpu-v4-podslice", "ct4p-hightpu-4t"),
    ],
)
def test_tpu_names(name, canonical, chips, hosts, topology, label, machine):
    acc = accelerators.lookup(name)
    assert (acc.name, acc.chips, acc.hosts, acc.topology, acc.gke_accelerator, acc.machine_type) == (
        canonical,
        chips,
        hosts,
        topology,
        label,
        machine,
    )
    assert acc.kind == "tpu" and acc.count == 1
    # the canonical name and the topology name both lead back to the same slice
    assert accelerators.lookup(acc.name) == acc
    assert accelerators.lookup(f"{acc.generation}-{acc.topology}") == acc


def test_published_chip_figures():
    figures = {
        g: (a.hbm_gib, a.peak_bf16_flops)
        for g, a in ((n.split("-")[0], accelerators.lookup(n)) for n in ("v4-8", "v5e-4", "v5p-8", "v6e-4"))
    }
    assert figures == {"v4": (32, 275e12), "v5e": (16, 197e12), "v5p": (95, 459e12), "v6e": (32, 918e12)}


def test_tpu_api_type_names_v5e_as_litepod():
    assert accelerators.lookup("v5e-16").tpu_api_type == "v5litepod-16"
    assert accelerators.lookup("v5p-128").tpu_api_type == "v5p-128"


@pytest.mark.parametrize(
    "name,canonical,label,machine,hbm",
    [
        ("h100-80gb", "h100-80gb", "nvidia-h100-80gb", "a3-highgpu-8g", 80),
        ("h100", "h100-80gb", "nvidia-h100-80gb", "a3-highgpu-8g", 80),
        ("h100-80gb-8", "h100-80gb", "nvidia-h100-80gb", "a3-highgpu-8g", 80),
        ("h200", "h200-141gb", "nvidia-h200-141gb", "a3-ultragpu-8g", 141),
        ("a100-40gb", "a100-40gb", "nvidia-tesla-a100", "a2-highgpu-8g", 40),
        ("a100-80gb", "a100-80gb", "nvidia-a100-80gb", "a2-ultragpu-8g", 80),
    ],
)
def test_gpu_names(name, canonical, label, machine, hbm):
    acc = accelerators.lookup(name, count=3)
    assert (acc.name, acc.gke_accelerator, acc.machine_type, acc.hbm_gib) == (canonical, label, machine, hbm)
    assert acc.kind == "gpu" and acc.chips == 8 and acc.hosts == 1 and acc.topology == ""
    assert acc.total_chips == 24 and acc.total_hosts == 3
    assert accelerators.lookup(acc.name, count=3) == acc


def test_multislice_counts():
    acc = accelerators.lookup("v5e-256", count=4)
    assert (acc.chips, acc.hosts, acc.count, acc.total_chips, acc.total_hosts) == (256, 64, 4, 1024, 256)


@pytest.mark.parametrize(
    "bad",
    [
        "v5p-12",
        "v5p-130",
        "v5e-3",
        "v4-2",
        "v6e-512",
        "v7-8",
        "tpu",
        "",
        "h100-80gb-4",
        "v5p-3x3x3",
        "v5e-4x4x4",
        "x5p-128",
    ],
)
def test_bad_names_are_one_line_errors(bad):
    with pytest.raises(accelerators.UnknownAcceleratorError) as e:
        accelerators.lookup(bad)
    msg = str(e.value)
    assert "\n" not in msg and "valid:" in msg
    assert isinstance(e.value, ConfigError)


def test_v5p_names_count_cores_in_the_error():
    with pytest.raises(accelerators.UnknownAcceleratorError, match="TensorCores"):
        accelerators.lookup("v5p-12")


@pytest.mark.parametrize("count", [0, -1, 1.5])
def test_bad_counts(count):
    with pytest.raises(ConfigError):
        accelerators.lookup("v5e-4", count=count)


@pytest.mark.parametrize(
    "kind,peak",
    [
        ("TPU v4", 275e12),
        ("TPU v5 lite", 197e12),
        ("TPU v5", 459e12),
        ("TPU v5p", 459e12),
        ("TPU v6 lite", 918e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
    ],
)
def test_peak_flops_by_device_kind(kind, peak):
    assert accelerators.peak_flops_for_device_kind(kind)[0] == peak


@pytest.mark.parametrize(
    "kind,bandwidth",
    [("NVIDIA H200", 4.8e12), ("NVIDIA H100 80GB HBM3", 3.35e12), ("TPU v5 lite", 819e9), ("TPU v6 lite", 1640e9)],
)
def test_hbm_bandwidth_by_device_kind(kind, bandwidth):
    assert accelerators.hbm_bandwidth_for_device_kind(kind)[0] == bandwidth
    assert accelerators.hbm_bandwidth_for_device_kind("cpu") is None


def test_metrics_reads_the_catalogue():
    from videopoet.trainer import metrics

    class FakeDevice:
        platform = "tpu"
        device_kind = "TPU v5 lite"

    peak, src = metrics.device_peak_flops(FakeDevice())
    assert peak == accelerators.lookup("v5e-1").peak_bf16_flops and "v5e" in src
    assert accelerators.peak_flops_for_device_kind("cpu") is None
