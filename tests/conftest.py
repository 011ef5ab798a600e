"""Test set-up: 8 fake CPU devices for sharding tests (must happen before jax is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The repository root must not be on sys.path: its folders (tokenizers/, schemas/, ...) install as
# videopoet.<folder>, and a bare `tokenizers/` there would shadow Hugging Face's `tokenizers`
# package (`python -m pytest` puts the working directory first on sys.path).
import sys  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _REPO]
