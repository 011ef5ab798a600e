"""Ray vs Beam on the same corpus, in the same run: clips/s with 1 and 2 workers, peak memory.

    python bench/ray_vs_beam_bench.py [--clips 24[,96]] [--shards 4] [--config tiny] [--workers 1,2]
                                      [--runners beam,ray]

Each job runs as its own ``videopoet pipeline run`` process (a fresh dataset version each time, so
nothing is resumed); a sampler thread polls the resident memory of that process and all of its
descendants (Beam's worker processes, the local Ray cluster the Ray job starts and its workers).
Reports wall time, clips/s (records / wall, start-up included), the Ray/Beam ratio per worker count,
the driver's peak RSS, the largest single worker's peak RSS (and which process it was) and its
peak resident memory not shared with other processes, and the peak total RSS of the tree.
Both runners must publish the same fingerprint with the same workers; the script says so.

With two corpus sizes (``--clips 48,192``) it also reports each job's *marginal* rate, the extra
clips of the larger corpus over the extra seconds they took: the job's throughput once the fixed
costs (process start, tokenizer load, XLA compilation, Ray's cluster) are paid, and the ratios on it.
Memory per worker should not grow with the corpus; both sizes' peaks are in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import psutil

BIN = os.path.join(os.path.dirname(sys.executable), "videopoet")


def _process_name(proc: psutil.Process) -> str:
    """A worker's short name: Ray sets its workers' titles (``ray::MapWorker(...)``, ``ray::IDLE``)."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    return (cmd[0] if cmd and cmd[0].startswith("ray::") else " ".join(cmd[:3]))[:80]


class TreeRSS:
    def __init__(self, pid: int, interval: float = 0.2):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.driver = self.worker = self.worker_private = self.total = 0
        self.worker_name = ""
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
                rss = {}
                for p in procs:
                    try:
                        info = p.memory_info()
                        rss[p.pid] = info.rss
                        if p.pid != self.root.pid:
                            # resident memory not shared with other processes (Ray's object store
                            # pages a worker maps are shared, and charged to the store)
                            private = info.rss - info.shared
                            if private > self.worker_private:
                                self.worker_private = private
                            if info.rss > self.worker:
                                self.worker, self.worker_name = info.rss, _process_name(p)
                    except psutil.Error:
                        pass
                self.driver = max(self.driver, rss.get(self.root.pid, 0))
                self.total = max(self.total, sum(rss.values()))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._t.join()
        mb = 1024 * 1024
        return {
            "driver_peak_mb": round(self.driver / mb),
            "largest_worker_peak_mb": round(self.worker / mb),
            "largest_worker": self.worker_name,
            "largest_worker_private_peak_mb": round(self.worker_private / mb),
            "tree_peak_mb": round(self.total / mb),
        }


def run_job(runner: str, workers: int, corpus: str, root: str, config: str) -> dict:
    version = f"{runner}-w{workers}"
    argv = [
        BIN,
        "pipeline",
        "run",
        "--runner",
        runner,
        "--input",
        os.path.join(corpus, "train-*.tar"),
        "--name",
        "bench",
        "--version",
        version,
        "--root",
        root,
        "--config",
        config,
        "--workers",
        str(workers),
        "--no-progress",
        "--json",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    mem = TreeRSS(p.pid)
    out, _ = p.communicate()
    wall = time.time() - t0
    m = mem.stop()
    if p.returncode != 0:
        raise SystemExit(f"{runner} w{workers} failed (exit {p.returncode})")
    s = json.loads(out[out.index("{\n") :])
    records = s["totals"]["records"]
    return {
        "runner": runner,
        "workers": workers,
        "wall_s": round(wall, 1),
        "records": records,
        "clips_per_s": round(records / wall, 3),
        "fingerprint": s["fingerprint"],
        "stage_seconds_total": s["stage_seconds"].get("total"),
        "tokenizer_rows": s["tokenizer_rows"],
        **m,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", default="24", help="one corpus size, or two (small,large) for marginal rates")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--runners", default="beam,ray", help="beam,ray (the ratios between them need both) or one")
    args = ap.parse_args(argv)
    runners = [r for r in ("beam", "ray") if r in args.runners.split(",")]
    if not runners or set(args.runners.split(",")) - {"beam", "ray"}:
        ap.error("--runners takes beam, ray or beam,ray")
    sizes = [int(x) for x in args.clips.split(",")]
    if len(sizes) not in (1, 2) or sorted(sizes) != sizes or len(set(sizes)) != len(sizes):
        ap.error("--clips takes one size or two increasing sizes, e.g. 48,192")
    work = tempfile.mkdtemp(prefix="vp-raybeam-")
    rows = []
    for clips in sizes:
        corpus = os.path.join(work, f"corpus-{clips}")
        subprocess.run(
            [
                BIN,
                "corpus",
                "synth",
                "--out",
                corpus,
                "--clips",
                str(clips),
                "--shards",
                str(args.shards),
                "--config",
                args.config,
                "--no-progress",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        for w in [int(x) for x in args.workers.split(",")]:
            for runner in runners:
                row = run_job(runner, w, corpus, os.path.join(work, f"root-{clips}"), args.config)
                rows.append({"clips": clips, **row})
                print(json.dumps(rows[-1]), file=sys.stderr)

    def find(clips: int, runner: str, workers: int) -> dict:
        return next(r for r in rows if (r["clips"], r["runner"], r["workers"]) == (clips, runner, workers))

    worker_counts = sorted({r["workers"] for r in rows})
    ratios = {}
    for clips in sizes:
        for w in worker_counts if len(runners) == 2 else ():
            ray_rate, beam_rate = find(clips, "ray", w)["clips_per_s"], find(clips, "beam", w)["clips_per_s"]
            ratios[f"{clips} clips: ray/beam clips_per_s, {w} worker(s)"] = round(ray_rate / beam_rate, 3)
        if len(worker_counts) > 1:
            lo, hi = worker_counts[0], worker_counts[-1]
            for runner in runners:
                speedup = find(clips, runner, hi)["clips_per_s"] / find(clips, runner, lo)["clips_per_s"]
                ratios[f"{clips} clips: {runner} {hi} workers / {lo}"] = round(speedup, 3)
    marginal = {}
    if len(sizes) == 2:
        small, large = sizes
        for w in worker_counts:
            for runner in runners:
                a, b = find(small, runner, w), find(large, runner, w)
                seconds_per_clip = (b["wall_s"] - a["wall_s"]) / (b["records"] - a["records"])
                marginal[f"{runner} {w}"] = {
                    "clips_per_s": round(1 / max(seconds_per_clip, 1e-9), 3),
                    # the wall time a job would take with no clips at all: start-up, load, compile
                    "fixed_s": round(a["wall_s"] - a["records"] * seconds_per_clip, 1),
                }
        for w in worker_counts if len(runners) == 2 else ():
            ratios[f"marginal: ray/beam, {w} worker(s)"] = round(
                marginal[f"ray {w}"]["clips_per_s"] / marginal[f"beam {w}"]["clips_per_s"], 3
            )
        if len(worker_counts) > 1:
            lo, hi = worker_counts[0], worker_counts[-1]
            for runner in runners:
                ratios[f"marginal: {runner} {hi} workers / {lo}"] = round(
                    marginal[f"{runner} {hi}"]["clips_per_s"] / marginal[f"{runner} {lo}"]["clips_per_s"], 3
                )
    out = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "corpus": {"clips": sizes, "shards": args.shards, "config": args.config},
        # the same data whatever the runner; the workers' XLA thread count can flip a few near-tied
        # audio codes (BENCHMARKS.md), so the check is per worker count
        "same_fingerprint": {
            f"{clips} clips, {w} worker(s)": len(
                {r["fingerprint"] for r in rows if (r["clips"], r["workers"]) == (clips, w)}
            )
            == 1
            for clips in sizes
            for w in worker_counts
        },
        "runs": rows,
        "marginal": marginal,
        "ratios": ratios,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
