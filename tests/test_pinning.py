"""Cores per local worker process (videopoet.pipelines.pinning): the rule, and slots claimed by real
processes through their lock files, freed when a process exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from videopoet.pipelines import pinning
from videopoet.pipelines.beam.job import build_options, local_workers
from videopoet.pipelines.errors import PipelineError


@pytest.mark.parametrize(
    "workers,cores,want",
    [
        (2, [0, 1], [[0], [1]]),
        (2, [0, 1, 2, 3], [[0, 1], [2, 3]]),
        (3, list(range(8)), [[0, 1], [2, 3, 4], [5, 6, 7]]),
        (4, [0, 1], [[0], [1], [0], [1]]),  # more workers than cores: round robin, one core each
        (2, [4, 6], [[4], [6]]),  # the cores this process may use, not 0..N-1
    ],
)
def test_rule(workers, cores, want):
    got = [pinning.cores_for(slot, workers, cores) for slot in range(workers)]
    assert got == want
    if workers <= len(cores):  # a partition: every core used once
        assert sorted(c for g in got for c in g) == cores


CLAIM = """
import json, os, sys, time
from videopoet.pipelines import pinning
got = pinning.claim_cores(sys.argv[1], int(sys.argv[2]))
again = pinning.claim_cores(sys.argv[1], int(sys.argv[2]))
print(json.dumps({"got": got, "again": again, "affinity": sorted(os.sched_getaffinity(0))}), flush=True)
time.sleep(float(sys.argv[3]))
"""


def _claim(slots, workers, hold_s):
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(slots), str(workers), str(hold_s)], stdout=subprocess.PIPE, text=True
    )


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_processes_claim_distinct_slots_and_a_dead_ones_slot_is_reused(tmp_path):
    cores = pinning.available_cores()
    plan = pinning.core_plan(2)
    first = _claim(tmp_path, 2, 30)
    a = json.loads(first.stdout.readline())
    second = _claim(tmp_path, 2, 30)
    b = json.loads(second.stdout.readline())
    try:
        assert a["got"] == a["again"] == a["affinity"] == plan[0]  # pinned; a second claim keeps the first
        assert b["got"] == b["affinity"] == plan[1]
        full = _claim(tmp_path, 2, 0)  # every slot held by a live process: no pinning, all cores
        c = json.loads(full.stdout.readline())
        assert c["got"] is None and c["affinity"] == cores
        full.wait(timeout=30)
        first.kill()  # the OS releases a killed process's lock: its slot is free again
        first.wait(timeout=30)
        time.sleep(0.2)
        late = _claim(tmp_path, 2, 0)
        d = json.loads(late.stdout.readline())
        assert d["got"] == plan[0]
        late.wait(timeout=30)
    finally:
        for p in (first, second):
            p.kill()
            p.wait(timeout=30)


def test_one_worker_is_never_pinned(tmp_path):
    assert pinning.claim_cores(str(tmp_path), 1) is None
    assert not list(tmp_path.iterdir())


def test_only_the_direct_runners_worker_processes_are_local():
    assert local_workers(build_options(2)) == 2
    assert local_workers(build_options(1)) == 1  # in_memory: the driver's own process
    assert local_workers(build_options(4, ["--runner=DataflowRunner", "--project=p"])) == 1
    assert local_workers(build_options(1, ["--direct_running_mode=multi_processing", "--direct_num_workers=3"])) == 3
    assert (
        local_workers(build_options(1, ["--direct_running_mode", "multi_processing", "--direct_num_workers", "3"])) == 3
    )
    for bad in ("two", "0", "1.5"):
        with pytest.raises(PipelineError, match=f"--direct_num_workers must be a positive whole number, got '{bad}'"):
            local_workers(build_options(1, ["--direct_running_mode=multi_processing", f"--direct_num_workers={bad}"]))


def test_worker_slots_are_a_fresh_directory_removed_after_the_job():
    with pinning.worker_slots(1) as none:
        assert none is None
    with pinning.worker_slots(3) as slots:
        assert slots["workers"] == 3 and os.path.isdir(slots["dir"]) and os.listdir(slots["dir"]) == []
    assert not os.path.exists(slots["dir"])
