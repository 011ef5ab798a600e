"""Test set-up: 8 fake CPU devices for sharding tests (must happen before jax is imported)."""

import os

# The suite compiles hundreds of small programs and runs few big ones, so it asks LLVM for no optimisation:
# compiles are much shorter and only the few compute-heavy tests run somewhat slower (BENCHMARKS.md, "Test
# suite"). Results are the same programs' (the tests compare runs made under the same flags).
# VIDEOPOET_TEST_XLA_OPT="" tests at XLA's default level; test helpers that set XLA_FLAGS for a subprocess
# add this variable to it.
os.environ.setdefault("VIDEOPOET_TEST_XLA_OPT", "--xla_backend_optimization_level=0")
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {os.environ['VIDEOPOET_TEST_XLA_OPT']}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Ray's token authentication (Ray >= 2.60 wants it): one token for the whole session, in the environment that
# every Ray process, CLI and in-process client of the suite inherits, so no test depends on a token file that
# another left in ~/.ray (an in-process client reads the token once and keeps it).
if "RAY_AUTH_TOKEN" not in os.environ:
    import secrets

    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
os.environ.setdefault("RAY_AUTH_MODE", "token")

# A persistent XLA compilation cache for the whole test session, subprocesses included (the CLI,
# quickstart, Beam and Ray workers, jax.distributed processes inherit the variables): the same tiny
# tokenizers and steps are compiled in many processes, and a cache hit skips the compile. Compiled
# executables are keyed by their HLO, flags and devices, so results are the same with or without it.
# One fresh directory per run (xdist workers share their controller's); removed when the run ends.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="videopoet-test-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)  # only this process: workers see the variable set
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The repository root must not be on sys.path: its folders (tokenizers/, schemas/, ...) install as
# videopoet.<folder>, and a bare `tokenizers/` there would shadow Hugging Face's `tokenizers`
# package (`python -m pytest` puts the working directory first on sys.path).
import sys  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _REPO]

# A real S3 API on 127.0.0.1 (moto's server) for object-storage tests: fixtures `s3_server` (session) and
# `s3_root` (a fresh bucket per test); see tests/s3_server.py.
import pytest  # noqa: E402
import ray_cluster  # noqa: E402
from ray_cluster import ray_cluster_session  # noqa: E402, F401
from s3_server import s3_root, s3_server  # noqa: E402, F401


# A datasets root holding ``sr@v1`` (one per session): synth tiny clips through the pipeline with
# ``--sr-pairs``, for the super-resolution CLI tests.
@pytest.fixture(scope="session")
def sr_root(tmp_path_factory):
    from videopoet.cli.main import main
    from videopoet.pipelines.synth import generate_corpus

    corpus = str(tmp_path_factory.mktemp("srcorpus"))
    generate_corpus(corpus, clips=4, shards=1, seed=2, config="tiny", progress=False)
    root = str(tmp_path_factory.mktemp("srdatasets"))
    argv = ["pipeline", "run", "--input", os.path.join(corpus, "*.tar"), "--name", "sr", "--version", "v1"]
    assert main([*argv, "--root", root, "--config", "tiny", "--sr-pairs", "--no-progress", "--json"]) == 0
    return root


# How the suite is spread over pytest-xdist workers (scripts/dev.sh runs `--dist loadfile
# --no-loadscope-reorder`): one unit of work per file, so a file's module fixtures are set up once, except
# the files that start a Ray cluster, which form one unit: only one Ray cluster may run on the machine at
# a time (tests/ray_cluster.py), and as one unit they run back to back on one worker instead of leaving
# another worker waiting on the lock. The units are made by the scheduler below (xdist's `xdist_group`
# marks cannot do it: from pytest 9 on, xdist's renaming of grouped node ids has no effect, and every
# test was scheduled alone). Units start longest first (each file's seconds on 3 workers and 2 cores,
# rounded), so that no long file starts last and runs alone.
RAY_FILES = ("test_ray_pipeline.py", "test_submit_ray.py")
SLOW_FILES = {
    "test_magvit2.py": 380,
    "test_ray_pipeline.py": 360,
    "test_submit_ray.py": 80,
    "test_quickstart.py": 180,
    "test_objstore_e2e.py": 170,
    "test_generate.py": 170,
    "test_superres.py": 160,
    "test_pipeline_beam.py": 150,
    "test_magvit2_perceptual.py": 140,
    "test_bench_magvit2_gpu.py": 130,
    "test_soundstream.py": 130,
    "test_aot.py": 120,
    "test_submit_slurm.py": 110,
    "test_elastic_resume.py": 80,
    "test_submit_local.py": 75,
    "test_superres_cli.py": 60,
    "test_trainer_extend.py": 60,
    "test_bench_accelerator.py": 55,
    "test_trainer_model.py": 50,
    "test_trainer_sharding.py": 45,
    "test_trainer_adapt.py": 45,
    "test_trainer_distributed.py": 40,
}


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its file, or "ray" for the files that start a Ray cluster."""
    path = nodeid.split("::", 1)[0]
    return "ray" if os.path.basename(path) in RAY_FILES else path


def _unit(item: pytest.Item) -> str:
    return unit_of(item.nodeid)


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the Ray files as one unit (xdist's LoadScopeScheduling cut by ``unit_of``)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return FileUnits(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    weight = {}
    for name, seconds in SLOW_FILES.items():
        unit = unit_of(f"tests/{name}")
        weight[unit] = weight.get(unit, 0) + seconds
    items.sort(key=lambda item: -weight.get(_unit(item), 0))  # stable: a file's tests keep their order


def pytest_runtest_teardown(item, nextitem):
    """The Ray group's shared cluster stops after its last test (not at the end of the worker's session)."""
    if _unit(item) == "ray" and (nextitem is None or _unit(nextitem) != "ray"):
        ray_cluster.stop_session_cluster()


def pytest_sessionfinish(session, exitstatus):
    ray_cluster.stop_session_cluster()
