"""Observability: prefix-LM FLOPs and MFU, a peak-FLOPs table, JSONL + TensorBoard writers, loss-curve PNG.

FLOPs are the *useful* work of a step (the convention of MFU): per token ``6 x`` the matmul
parameters (blocks + output head; the embedding lookup and the text projection of non-text tokens
are not matmuls) plus attention: ``QK^T`` and ``AV`` cost ``2 x 2 x heads x head_dim`` per
(query, key) pair the prefix-LM mask allows, times 3 for forward + backward. A sequence of length S
with prefix P allows ``P^2`` pairs in the prefix (bidirectional) and ``q + 1`` for each output
query q >= P: ``P^2 + (S(S+1) - P(P+1)) / 2`` pairs, not the causal ``S(S+1)/2`` nor the dense
``S^2``. Masked-out keys (unused text slots) are not subtracted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from videopoet.trainer.config import TASKS, ModelConfig

# Dense peak FLOP/s per device (bf16 unless noted). CPU is measured at start (float32 matmul).
PEAK_FLOPS = {
    "h100": 989e12,  # H100 SXM bf16 dense
    "h200": 989e12,
    "a100": 312e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v6e": 918e12,
}


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
    for name, peak in PEAK_FLOPS.items():
        if name in kind:
            return peak, f"table ({name})"
    return float("nan"), f"unknown device kind {kind!r}"


# ------------------------------------------------------------------------------------- writers
class MetricsWriter:
    """JSONL always; TensorBoard (tensorboardX) when installed."""

    def __init__(self, run_dir: str, enabled: bool = True):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.enabled = enabled
        self.tb = None
        if enabled:
            os.makedirs(run_dir, exist_ok=True)
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(os.path.join(run_dir, "tb"))
            except Exception:  # noqa: BLE001 - TensorBoard is optional
                self.tb = None

    def write(self, step: int, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **row}, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in _flatten(row).items():
                if isinstance(v, (int, float)) and np.isfinite(v):
                    self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def per_task(sums: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Accumulated per-task sums -> {task: {loss, accuracy, tokens}} for tasks that occurred."""
    out = {}
    for i, t in enumerate(TASKS):
        n = float(sums["task_tokens"][i])
        if n > 0:
            out[t] = {"loss": float(sums["task_loss_sum"][i] / n), "accuracy": float(sums["task_correct"][i] / n),
                      "tokens": int(n)}
    return out


def plot_loss_curve(run_dir: str, out: str | None = None) -> str | None:
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="loss (all tasks)", lw=2)
    tasks = sorted({t for r in rows for t in r.get("tasks", {})})
    for t in tasks:
        pts = [(r["step"], r["tasks"][t]["loss"]) for r in rows if t in r.get("tasks", {})]
        ax.plot(*zip(*pts), lw=0.8, alpha=0.7, label=t)
    base = rows[-1].get("unigram_baseline")
    if base:
        ax.axhline(base, color="k", ls="--", lw=0.8, label="unigram baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / output token)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out or os.path.join(run_dir, "loss_curve.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
