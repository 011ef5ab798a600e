"""The CLI keeps JAX from probing a TPU that is not there (libtpu installed by the tpu extra)."""

import importlib.util

from videopoet.cli import main as cli_main


def _fake_specs(monkeypatch, present: set[str], devices: list[str]):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if name in ("libtpu", "jax_plugins") or name.startswith("jax_plugins."):
            return object() if name in present else None
        return real(name, *args)

    monkeypatch.setattr(cli_main.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(cli_main.glob, "glob", lambda pattern: [d for d in devices if d.startswith(pattern[:10])])


def test_cpu_only_machine_with_libtpu_gets_cpu(monkeypatch):
    _fake_specs(monkeypatch, {"libtpu"}, [])
    env: dict[str, str] = {}
    cli_main.default_jax_platforms(env)
    assert env == {"JAX_PLATFORMS": "cpu"}


def test_gpu_machine_with_libtpu_keeps_cuda(monkeypatch):
    _fake_specs(monkeypatch, {"libtpu", "jax_plugins", "jax_plugins.xla_cuda12"}, [])
    env: dict[str, str] = {}
    cli_main.default_jax_platforms(env)
    assert env == {"JAX_PLATFORMS": "cuda,cpu"}


def test_tpu_vm_and_user_choice_are_left_alone(monkeypatch):
    _fake_specs(monkeypatch, {"libtpu"}, ["/dev/accel0"])
    env: dict[str, str] = {}
    cli_main.default_jax_platforms(env)
    assert env == {}
    _fake_specs(monkeypatch, {"libtpu"}, [])
    env = {"JAX_PLATFORMS": "tpu"}
    cli_main.default_jax_platforms(env)
    assert env == {"JAX_PLATFORMS": "tpu"}


def test_without_libtpu_nothing_changes(monkeypatch):
    _fake_specs(monkeypatch, set(), [])
    env: dict[str, str] = {}
    cli_main.default_jax_platforms(env)
    assert env == {}
