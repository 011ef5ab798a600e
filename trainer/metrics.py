"""Observability: prefix-LM FLOPs and MFU, per-task sums, the loss-curve panels.

Peak FLOP/s per device come from the accelerator catalogue (:mod:`videopoet.infra.accelerators`); the
rows go to the run directory's metrics log (:mod:`videopoet.rundir.metrics`).

FLOPs are the *useful* work of a step (the convention of MFU): per token ``6 x`` the matmul
parameters (blocks + output head; the embedding lookup and the text projection of non-text tokens
are not matmuls) plus attention: ``QK^T`` and ``AV`` cost ``2 x 2 x heads x head_dim`` per
(query, key) pair the prefix-LM mask allows, times 3 for forward + backward. A sequence of length S
with prefix P allows ``P^2`` pairs in the prefix (bidirectional) and ``q + 1`` for each output
query q >= P: ``P^2 + (S(S+1) - P(P+1)) / 2`` pairs, not the causal ``S(S+1)/2`` nor the dense
``S^2``. Masked-out keys (unused text slots) are not subtracted.
"""

from __future__ import annotations

import time

import numpy as np

from videopoet.infra import accelerators
from videopoet.rundir.metrics import Panel
from videopoet.trainer.config import TASKS, ModelConfig


def attention_pairs(seq_len: int, prefix_len: int) -> int:
    s, p = int(seq_len), int(prefix_len)
    return p * p + (s * (s + 1) - p * (p + 1)) // 2


def step_flops(cfg: ModelConfig, seq_len: int, prefix_lens) -> float:
    """Training FLOPs of one step over a batch of sequences of ``seq_len`` with these prefixes."""
    prefix_lens = np.asarray(prefix_lens).reshape(-1)
    tokens = seq_len * prefix_lens.size
    matmul_params = cfg.layers * (cfg.block_params() - 2 * cfg.d_model) + cfg.d_model * cfg.vocab_size
    pairs = sum(attention_pairs(seq_len, p) for p in prefix_lens)
    attn = cfg.layers * 4 * cfg.heads * cfg.head_dim * pairs
    return 3.0 * (2.0 * matmul_params * tokens + attn)


_CPU_PEAK: float | None = None


def measured_cpu_peak(n: int = 1024, repeats: int = 5) -> float:
    """float32 matmul FLOP/s of this host through XLA (the CPU 'peak' for MFU)."""
    global _CPU_PEAK
    if _CPU_PEAK is None:
        import jax
        import jax.numpy as jnp

        cpu = jax.devices("cpu")[0]
        a = jax.device_put(jnp.ones((n, n), jnp.float32), cpu)
        f = jax.jit(lambda x: x @ x)
        f(a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            f(a).block_until_ready()
            best = min(best, time.perf_counter() - t)
        _CPU_PEAK = 2.0 * n**3 / best
    return _CPU_PEAK


def device_peak_flops(device=None, override: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s per device, where the number came from)."""
    if override > 0:
        return override, "config"
    import jax

    d = device or jax.devices()[0]
    kind = getattr(d, "device_kind", "").lower()
    if d.platform == "cpu":
        return measured_cpu_peak(), "measured (float32 matmul, all host devices share the cores)"
    found = accelerators.peak_flops_for_device_kind(kind)
    if found is not None:
        return found[0], f"catalogue ({found[1]}, videopoet.infra.accelerators)"
    return float("nan"), f"unknown device kind {kind!r}"


def per_task(sums: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Accumulated per-task sums -> {task: {loss, accuracy, tokens}} for tasks that occurred."""
    out = {}
    for i, t in enumerate(TASKS):
        n = float(sums["task_tokens"][i])
        if n > 0:
            out[t] = {
                "loss": float(sums["task_loss_sum"][i] / n),
                "accuracy": float(sums["task_correct"][i] / n),
                "tokens": int(n),
            }
    return out


# the loss curve: the loss over all tasks, each task's loss, and the unigram baseline to beat
LOSS_PANELS = (
    Panel(
        "training loss",
        ("loss", "tasks/*/loss"),
        ylabel="cross-entropy (nats / output token)",
        hline="unigram_baseline",
    ),
)
