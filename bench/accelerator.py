"""One accelerator benchmark for every GPU goal, in one bounded call of the device tool.

    python3 bench/accelerator.py [--out DIR (default $OUT)] [--parts trainer,magvit2,sampler,pipeline]
                                 [--budget-s 540] [--allow-cpu]

Made for a lent H100 / H200 (10 minutes a command, nothing installable there, files back from
``$OUT`` only): it runs from the checkout without installing the package (``bench/checkout.py``) and
writes ``accelerator.json`` (every figure, the goals and whether each is met) and ``accelerator.log``
(the tail of each measurement's output). Each measurement is a bench script of its own, run as a
subprocess with a timeout cut to what is left of ``--budget-s``, so one that fails, runs out of memory
or overruns costs only its own share and is recorded as an error; the JSON is rewritten after each.

Parts (on a GPU; ``--allow-cpu`` on a machine without one runs the same scripts with the ``tiny``
presets, which is how ``tests/test_bench_accelerator.py`` knows it runs before a device is lent):

* **trainer** - ``bench/trainer_bench.py``: the train step's MFU for ``300m`` and ``1b`` in bfloat16
  with the fast attention path (cuDNN flash attention through ``jax.nn.dot_product_attention``), on
  text-to-video sequences of the paper's 17x128x224 clips (5x16x28 latent tokens), prefix-LM FLOPs
  counted as the trainer counts them (``trainer/metrics.py``). Batch and rematerialisation are chosen
  for the chip by trying candidates in order (largest first) until one runs: a candidate that does not
  fit, or that the cuDNN path refuses, falls through to the next. Goal: MFU >= 0.40 for ``300m``.
* **magvit2** - ``bench/magvit2_bench.py``: the ``paper`` MAGVIT-v2 encode in bfloat16 as a fraction
  of the chip's dense bf16 peak (and of a bf16 matmul timed in the same process).
* **sampler** - ``bench/generation_bench.py``: the ``300m`` KV-cache sampler's seconds per 17-frame
  clip (5x16x28 = 2,240 tokens, bfloat16 weights) against the bound of reading the weights once per
  token at the chip's HBM bandwidth (the accelerator catalogue).
* **pipeline** - ``bench/pipeline_bench.py``: the pre-tokenization job's clips/s with the shipped
  tokenizers on the accelerator (the shard path every Beam and Ray worker runs, and the whole Beam job
  when Beam is installed) against decode-only on the same clips. Goal: >= 0.8 of decode-only (the job
  decode-bound). It needs PyAV, decord and ArrayRecord, which the device image lacks: carry them as
  wheels (``bench/device_wheels.sh``); without them the part is recorded as skipped, with the reason.

Without ``--allow-cpu`` a jax that finds no accelerator stops at once (exit 3, the JSON says why)
instead of spending device minutes on its CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkout  # noqa: E402  (bench/checkout.py: import videopoet from this checkout)

BENCH = os.path.dirname(os.path.abspath(__file__))
PARTS = ("trainer", "magvit2", "sampler", "pipeline")
PAPER_LATENT = "5,16,28"  # 17 x 128 x 224 through the paper's MAGVIT-v2 (4x temporal, 8x spatial)
MFU_GOAL = 0.40
DECODE_BOUND_GOAL = 0.8
RESERVE_S = 15  # left at the end of the budget for writing the results


def log(msg: str) -> None:
    print(f"[accelerator {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------- the plan
def trainer_candidates(gpu: bool) -> dict[str, list[dict]]:
    """Per model preset, the (batch, remat, attention) settings to try, the one most likely fastest first."""
    if not gpu:
        return {"tiny": [{"batch": 4, "remat": "none", "attention": "auto"}]}
    return {
        "300m": [
            {"batch": 16, "remat": "none", "attention": "cudnn"},
            {"batch": 16, "remat": "dots", "attention": "cudnn"},
            {"batch": 16, "remat": "none", "attention": "xla"},
            {"batch": 8, "remat": "full", "attention": "xla"},
        ],
        "1b": [
            {"batch": 8, "remat": "dots", "attention": "cudnn"},
            {"batch": 8, "remat": "full", "attention": "cudnn"},
            {"batch": 8, "remat": "full", "attention": "xla"},
            {"batch": 4, "remat": "full", "attention": "xla"},
        ],
    }


def trainer_command(preset: str, cand: dict, gpu: bool) -> list[str]:
    geometry = ["--latent", PAPER_LATENT, "--records", "48", "--steps", "10", "--loader-batches", "12"]
    if not gpu:
        geometry = ["--latent", "5,4,4", "--records", "8", "--steps", "3", "--loader-batches", "4"]
    return [
        sys.executable,
        os.path.join(BENCH, "trainer_bench.py"),
        "--config",
        preset,
        *geometry,
        "--json",
        f"model.dtype={'bfloat16' if gpu else 'float32'}",
        f"model.attention={cand['attention']}",
        f"model.remat={cand['remat']}",
        f"batch_size={cand['batch']}",
        "data.mixture={t2v: 1.0}",
    ]


def magvit2_command(gpu: bool, peak_tflops: float) -> list[str]:
    size = ["--presets", "paper", "--dtype", "bfloat16", "--batch", "8", "--matmul-n", "8192"]
    if not gpu:
        size = ["--presets", "tiny", "--dtype", "float32", "--batch", "2", "--matmul-n", "256", "--reps", "1"]
    return [sys.executable, os.path.join(BENCH, "magvit2_bench.py"), *size, "--peak-tflops", str(peak_tflops), "--json"]


def sampler_command(gpu: bool) -> list[str]:
    size = ["--presets", "300m", "--geometry", "paper", "--param-dtype", "bfloat16", "--reps", "2"]
    if not gpu:  # a CPU has no HBM figure: a nominal 10 GB/s stands in so the bound's arithmetic runs
        size = ["--presets", "tiny", "--param-dtype", "bfloat16", "--reps", "1", "--hbm-bandwidth", "1e10"]
    return [sys.executable, os.path.join(BENCH, "generation_bench.py"), *size, "--skip-recompute"]


PIPELINE_MODULES = ("av", "decord", "array_record")


def pipeline_command(gpu: bool, with_beam: bool) -> list[str]:
    size = ["--clips", "32", "--shards", "2", "--synth", "small", "--config", "small", "--cores", "2"]
    if not gpu:
        size = ["--clips", "4", "--shards", "2", "--synth", "tiny", "--config", "tiny", "--cores", "1"]
    return [
        sys.executable,
        os.path.join(BENCH, "pipeline_bench.py"),
        *size,
        "--json",
        *([] if with_beam else ["--skip-beam"]),
    ]


# --------------------------------------------------------------------------------------- running
class Runner:
    """Runs the measurements inside one time budget and keeps the log of each."""

    def __init__(self, out: str, budget_s: float, env: dict[str, str]):
        self.out, self.env = out, env
        self.deadline = time.monotonic() + budget_s
        self.log_path = os.path.join(out, "accelerator.log")
        open(self.log_path, "w").close()

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def run(self, name: str, cmd: list[str], timeout_s: float) -> tuple[dict | None, str | None]:
        """(the JSON the command printed last, None) or (None, why it gave none)."""
        timeout = min(timeout_s, self.left())
        if timeout < 10:
            return None, "skipped: the time budget is spent"
        log(f"{name}: {' '.join(os.path.basename(c) if i < 2 else c for i, c in enumerate(cmd))} (<= {timeout:.0f} s)")
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
            stdout, stderr, rc = res.stdout, res.stderr, res.returncode
        except subprocess.TimeoutExpired as e:
            stdout, stderr, rc = _text(e.stdout), _text(e.stderr), None
        wall = time.monotonic() - t0
        with open(self.log_path, "a") as f:
            f.write(f"===== {name} (rc {rc}, {wall:.0f} s): {' '.join(cmd[1:])}\n{stderr[-4000:]}\n{stdout[-2000:]}\n")
        if rc is None:
            return None, f"timed out after {timeout:.0f} s"
        if rc != 0:
            lines = [x for x in stderr.strip().splitlines() if x.strip()]
            return None, f"exit {rc}: {lines[-1][:300] if lines else 'no output'}"
        try:
            return _last_json(stdout), None
        except ValueError:
            return None, "printed no JSON"


def _text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")


def _last_json(stdout: str) -> dict:
    """The last JSON value a bench printed (one line, or an indented object ending the output)."""
    text = stdout.strip()
    start = text.rfind("\n{")
    for candidate in (text[start + 1 :] if start >= 0 else text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("no JSON")


def run_trainer(r: Runner, gpu: bool) -> dict:
    out = {}
    for preset, cands in trainer_candidates(gpu).items():
        tried = []
        for cand in cands:
            row, err = r.run(f"trainer {preset} {cand}", trainer_command(preset, cand, gpu), 240)
            if row is not None:
                keep = ("mfu", "step_time_s", "tokens_per_s", "mean_seq_len", "params", "peak_flops", "peak_source")
                out[preset] = {**cand, **{k: row[k] for k in keep}, "compile_s": row["compile_and_first_steps_s"]}
                out[preset]["tried"] = tried
                break
            tried.append({**cand, "error": err})
            if err and err.startswith("skipped"):
                break
        if preset not in out:
            out[preset] = {"error": "no candidate ran", "tried": tried}
    return out


def run_magvit2(r: Runner, gpu: bool, peak_tflops: float) -> dict:
    rows, err = r.run("magvit2", magvit2_command(gpu, peak_tflops), 200)
    if rows is None:
        return {"error": err}
    rows = rows if isinstance(rows, list) else [rows]
    keep = ("encode_clips_per_s", "encode_vs_peak", "encode_vs_matmul", "decode_clips_per_s", "matmul_vs_peak")
    return {row["preset"]: {k: row.get(k) for k in keep} for row in rows}


def run_sampler(r: Runner, gpu: bool) -> dict:
    res, err = r.run("sampler", sampler_command(gpu), 200)
    if res is None:
        return {"error": err}
    keep = ("params", "output_len", "param_dtype", "weight_bytes_per_token", "cache_s", "cache_tokens_per_s")
    keep += ("bound_s", "cache_vs_bound", "detokenize_s", "seconds_per_clip", "tokenizer")
    return {row["preset"]: {k: row.get(k) for k in keep} for row in res["results"]}


def run_pipeline(r: Runner, gpu: bool) -> dict:
    missing = [m for m in PIPELINE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not installed here: {', '.join(missing)} (carry them: bench/device_wheels.sh)"}
    # the whole Beam job too where Beam is installed; not in the CPU plan, whose point is that the plan runs
    # (Beam on a CPU is measured by bench/pipeline_bench.py and bench/ray_vs_beam_bench.py)
    with_beam = gpu and importlib.util.find_spec("apache_beam") is not None
    res, err = r.run("pipeline", pipeline_command(gpu, with_beam), 300)
    if res is None:
        return {"error": err}
    e2e, dec, beam = res["end_to_end"], res["decode_only"], res["beam"]
    out = {
        "config": res["config"],
        "cores": res["cores"],
        "clips": e2e["clips"],
        "decode_only_clips_per_s": dec["clips_per_s"],
        "shard_path_clips_per_s": e2e["clips_per_s"],
        "ratio_vs_decode_only": res["ratio_e2e_vs_decode"],
        "tokenizer_share_of_wall": res["tokenizer_share_of_e2e_wall"],
        "stage_s": e2e["stage_s"],
        "tokenizers": e2e["tokenizers"],
    }
    if beam:
        out["beam_wall_s"] = beam["wall_s"]
        out["beam_clips_per_s_incl_startup"] = beam["clips_per_s_incl_startup"]
    elif gpu:
        out["beam"] = "not installed here: the shard path above is what each Beam worker runs"
    else:
        out["beam"] = "not run in the CPU plan"
    return out


def goals(results: dict, gpu: bool) -> list[dict]:
    """The issue's goals against what was measured (None where the figure is missing)."""
    preset, dtype = ("300m", "bfloat16") if gpu else ("tiny", "float32")
    mfu = results.get("trainer", {}).get(preset, {}).get("mfu")
    ratio = results.get("pipeline", {}).get("ratio_vs_decode_only")
    rows = [
        {"goal": f"trainer MFU {preset} {dtype}", "value": mfu, "target": MFU_GOAL},
        {"goal": "pipeline clips/s vs decode-only", "value": ratio, "target": DECODE_BOUND_GOAL},
    ]
    for row in rows:
        row["met"] = None if row["value"] is None else bool(row["value"] >= row["target"])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "accelerator-out")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole call")
    ap.add_argument("--allow-cpu", action="store_true", help="run the tiny presets where jax finds no accelerator")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; choose from {list(PARTS)}")
    os.makedirs(args.out, exist_ok=True)
    checkout.ensure_importable()
    import jax

    from videopoet.infra import accelerators

    backend = jax.default_backend()
    device = jax.devices()[0]
    gpu = backend != "cpu"
    summary: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "backend": backend,
        "device_kind": device.device_kind,
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "parts": parts,
    }
    path = os.path.join(args.out, "accelerator.json")

    def save():
        with open(path, "w") as f:
            json.dump(summary, f, indent=2, default=str)

    if not gpu and not args.allow_cpu:
        summary["error"] = f"no accelerator: jax runs on {backend} (pass --allow-cpu to run the tiny presets)"
        log(summary["error"])
        save()
        return 3
    peak = accelerators.peak_flops_for_device_kind(device.device_kind)
    summary["peak_bf16_flops"] = peak[0] if peak else None
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    if gpu:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    else:
        env["JAX_PLATFORMS"] = "cpu"
    runner = Runner(args.out, args.budget_s, env)
    peak_tflops = (peak[0] if peak else 0.5e12) / 1e12
    for part in parts:
        t0 = time.monotonic()
        if part == "trainer":
            summary[part] = run_trainer(runner, gpu)
        elif part == "magvit2":
            summary[part] = run_magvit2(runner, gpu, peak_tflops)
        elif part == "sampler":
            summary[part] = run_sampler(runner, gpu)
        else:
            summary[part] = run_pipeline(runner, gpu)
        summary.setdefault("part_wall_s", {})[part] = round(time.monotonic() - t0, 1)
        summary["goals"] = goals(summary, gpu)
        save()
        log(f"{part}: {json.dumps(summary[part], default=str)[:400]}")
    for g in summary["goals"]:
        log(f"goal {g['goal']}: {g['value']} (target {g['target']}): {g['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
