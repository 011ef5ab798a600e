"""The shape of a run on accelerator hosts (GKE, Cloud TPU VMs, Ray), from the accelerator catalogue.

A request names an accelerator (``--accelerator v5p-128``, ``h100-80gb``) and a count (``--slices`` for
TPU multislice, ``--nodes`` for GPU node pools); :func:`resolve` turns that into hosts, processes and
devices, so the preflight checks the mesh and the global batch against the real device count, and every
target renders the same numbers:

* TPU: one JAX process per TPU VM host; ``hosts`` and ``chips per host`` per slice come from the catalogue
  (``--nodes`` may be left at 1 or must equal the slice's hosts); devices = chips x slices.
* GPU: one process per node driving all its GPUs (or ``--processes-per-node`` = GPUs per node, one per GPU);
  ``--gpus-per-node`` defaults to the node type's GPU count and may not exceed it.
* no accelerator: CPU hosts (``--nodes`` x ``--processes-per-node``), or GPUs per ``--gpus-per-node``.
"""

from __future__ import annotations

import dataclasses

from videopoet.infra import accelerators
from videopoet.infra.request import RequestError, SubmitRequest


@dataclasses.dataclass(frozen=True)
class Shape:
    """Hosts, processes and devices of one run (``accelerator`` is None for plain CPU / GPU hosts)."""

    request: SubmitRequest  # the request with nodes / gpus_per_node filled in from the catalogue
    accelerator: accelerators.Accelerator | None
    hosts_per_slice: int
    slices: int
    devices_per_host: int  # TPU chips or GPUs per host; 0 for CPU hosts
    image_variant: str  # cpu | cuda | tpu

    @property
    def hosts(self) -> int:
        return self.hosts_per_slice * self.slices

    @property
    def devices(self) -> int | None:
        """All accelerator devices of the run (None for CPU hosts, whose device count is the runtime's)."""
        return self.hosts * self.devices_per_host if self.devices_per_host else None

    @property
    def is_tpu(self) -> bool:
        return self.accelerator is not None and self.accelerator.kind == "tpu"

    @property
    def is_gpu(self) -> bool:
        return self.image_variant == "cuda"


def resolve(request: SubmitRequest) -> Shape:
    """The run's :class:`Shape`; a request the accelerator cannot hold raises one-line :class:`RequestError`."""
    if not request.accelerator:
        variant = "cuda" if request.gpus_per_node else "cpu"
        if request.slices != 1:
            raise RequestError("--slices is for TPU multislice; name the TPU slice with --accelerator")
        return Shape(request, None, request.nodes, 1, request.gpus_per_node, variant)
    try:
        probe = accelerators.lookup(request.accelerator)
    except accelerators.UnknownAcceleratorError as e:
        raise RequestError(str(e)) from None
    if probe.kind == "tpu":
        return _tpu(request, accelerators.lookup(request.accelerator, request.slices))
    return _gpu(request, accelerators.lookup(request.accelerator, request.nodes))


def _tpu(request: SubmitRequest, acc: accelerators.Accelerator) -> Shape:
    if request.nodes not in (1, acc.hosts):
        raise RequestError(
            f"{acc.name} ({acc.topology}) has {acc.hosts} host(s) per slice; --nodes {request.nodes} "
            "does not match (leave it out)"
        )
    if request.processes_per_node != 1:
        raise RequestError(f"TPU hosts run one JAX process each; --processes-per-node {request.processes_per_node}")
    if request.gpus_per_node:
        raise RequestError(f"{acc.name} is a TPU slice; --gpus-per-node does not apply")
    resolved = dataclasses.replace(request, nodes=acc.hosts)
    return Shape(resolved, acc, acc.hosts, request.slices, acc.chips_per_host, "tpu")


def _gpu(request: SubmitRequest, acc: accelerators.Accelerator) -> Shape:
    if request.slices != 1:
        raise RequestError(f"{acc.name} nodes are counted with --nodes; --slices is for TPU multislice")
    gpus = request.gpus_per_node or acc.chips_per_host
    if gpus > acc.chips_per_host:
        raise RequestError(f"{acc.name} nodes have {acc.chips_per_host} GPUs; --gpus-per-node {gpus} is more")
    if request.processes_per_node not in (1, gpus):
        raise RequestError(
            f"--processes-per-node is 1 (one process drives the node's GPUs) or {gpus} (one per GPU), "
            f"not {request.processes_per_node}"
        )
    resolved = dataclasses.replace(request, gpus_per_node=gpus)
    return Shape(resolved, acc, request.nodes, 1, gpus, "cuda")


def preflight_args(request: SubmitRequest) -> tuple[SubmitRequest, int | None]:
    """(request with the shape filled in, total devices): what ``request.preflight`` checks the mesh against."""
    shape = resolve(request)
    return shape.request, shape.devices
