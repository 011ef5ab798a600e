"""Object storage as the package uses it: which paths are remote, the per-host cache, client retries.

* ``is_remote(path)``: an fsspec URI other than ``file://`` (``s3://``, ``gs://``, ``memory://``, ...).
* ``cache_root()``: this host's cache of remote files (``$VIDEOPOET_CACHE``, else
  ``~/.cache/videopoet``): dataset shards the trainer reads (:mod:`videopoet.schemas.cache`) and the
  local staging copies of object-store run directories (:mod:`videopoet.rundir.checkpoints`). Anything
  in it can be deleted between runs; it is refilled (and every file re-checked) on use.
* ``configure()``: S3 clients retry with backoff. botocore's default (legacy mode, 5 attempts)
  gives up after a few seconds of an unreachable endpoint; a server restart, a network blip or a
  throttling burst must instead cost a pipeline or a checkpoint save only time. Every S3 filesystem
  that fsspec makes then uses botocore's standard retry mode (truncated exponential backoff with
  jitter, ``rand * min(2**attempt, 20)`` seconds) with ``$VIDEOPOET_STORE_ATTEMPTS`` attempts
  (default 10: about a minute of outage on average), unless the user's own fsspec config sets
  ``config_kwargs.retries``. gcsfs retries by itself (exponential backoff on 5xx and connection errors).
  The same call bounds every S3 request in time: botocore asks for ``Expect: 100-continue`` on every
  upload of a file-like body, and aiohttp waits for the server's ``100 Continue`` without any timeout
  (its read timeout starts once the body is sent), so a connection that stops answering mid-upload
  would block the job for ever. Uploads therefore go out without the expectation (the header is not
  signed; it only saves sending a body that the server would refuse), which puts them under the
  client's connect and read timeouts like every other request, and the retries above then apply.
  Called by the modules that open object-store paths, at import, so Beam and Ray workers get it too.
* ``storage_error(exc, paths)``: the one line for an exception that object storage raised (an endpoint
  that does not answer, missing credentials, a bucket that does not exist or refuses access), naming
  the remote paths of the command; the CLI prints it instead of the client library's traceback.
"""

from __future__ import annotations

import os

import fsspec.config

__all__ = ["DEFAULT_ATTEMPTS", "cache_root", "configure", "is_remote", "storage_error"]

DEFAULT_ATTEMPTS = 10


def is_remote(path: str) -> bool:
    """Whether ``path`` is an fsspec URI on a filesystem other than the local one."""
    p = str(path)
    return "://" in p and not p.startswith("file://")


def cache_root() -> str:
    """This host's cache directory for remote files (``$VIDEOPOET_CACHE`` or ``~/.cache/videopoet``)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("VIDEOPOET_CACHE") or "~/.cache/videopoet"))


def attempts() -> int:
    """Attempts per S3 request (``$VIDEOPOET_STORE_ATTEMPTS``, default :data:`DEFAULT_ATTEMPTS`)."""
    raw = os.environ.get("VIDEOPOET_STORE_ATTEMPTS", "")
    try:
        return max(1, int(raw)) if raw else DEFAULT_ATTEMPTS
    except ValueError:
        return DEFAULT_ATTEMPTS


_OURS: dict | None = None  # the retries dict configure() put in fsspec's config (a later call may replace it)
_SESSION_CLASS: type | None = None


def _bounded_session_class() -> type | None:
    """aiobotocore's aiohttp session, sending requests without ``Expect: 100-continue`` (module
    docstring); ``None`` without aiobotocore. Built on first use, so importing this module does not
    import aiohttp."""
    global _SESSION_CLASS
    if _SESSION_CLASS is None:
        try:
            from aiobotocore.httpsession import AIOHTTPSession
        except ImportError:
            return None

        class BoundedAIOHTTPSession(AIOHTTPSession):
            async def send(self, request):
                request.headers.pop("Expect", None)  # a case-insensitive mapping
                return await super().send(request)

        _SESSION_CLASS = BoundedAIOHTTPSession
    return _SESSION_CLASS


class BoundedHTTPSession:
    """What ``configure`` gives botocore's config as ``http_session_cls``: makes the session of
    :func:`_bounded_session_class` when a client is created (aiobotocore instantiates the class)."""

    def __new__(cls, *args, **kwargs):
        session_class = _bounded_session_class()
        if session_class is None:
            raise ImportError("S3 clients need aiobotocore (installed with s3fs)")
        return session_class(*args, **kwargs)


def configure() -> None:
    """Make S3 clients retry with backoff and bound every request in time (module docstring);
    idempotent, keeps a user's own settings.

    Filesystem instances made before the call (fsspec caches them) keep their clients."""
    global _OURS
    s3 = dict(fsspec.config.conf.get("s3") or {})
    kwargs = dict(s3.get("config_kwargs") or {})
    kwargs.setdefault("http_session_cls", BoundedHTTPSession)
    if "retries" not in kwargs or kwargs["retries"] is _OURS:  # botocore rewrites the dict in place: identity
        _OURS = {"mode": "standard", "total_max_attempts": attempts()}
        kwargs["retries"] = _OURS
    s3["config_kwargs"] = kwargs
    fsspec.config.conf["s3"] = s3


# exception classes (module, name) that only object-storage clients raise
_CLIENT_ERRORS = (
    ("botocore.exceptions", "BotoCoreError"),  # no endpoint, no credentials, bad config
    ("botocore.exceptions", "ClientError"),  # an S3 error response (NoSuchBucket, AccessDenied, ...)
    ("google.auth.exceptions", "GoogleAuthError"),  # no application-default credentials
    ("gcsfs.retry", "HttpError"),
    ("aiohttp", "ClientError"),  # gcsfs's transport: connection refused, DNS
)


def _client_error_types() -> tuple[type, ...]:
    import importlib
    import sys

    out = []
    for module, name in _CLIENT_ERRORS:
        if module.split(".")[0] not in sys.modules:  # never raised if its library was never imported
            continue
        try:
            out.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(out)


def storage_error(exc: BaseException, paths=()) -> str | None:
    """One line for ``exc`` when object storage raised it (or an ``OSError`` while the command names a
    remote path), naming the command's remote ``paths``; ``None`` for anything else."""
    remote = [str(p) for p in paths if is_remote(str(p))]
    chain, e = [], exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    types = _client_error_types()
    hit = next((e for e in chain if types and isinstance(e, types)), None)
    if hit is None and remote and isinstance(exc, OSError):
        hit = exc
    if hit is None:
        return None
    where = ", ".join(dict.fromkeys(remote)) or "object storage"
    detail = " ".join(str(hit).split()) or type(hit).__name__
    if len(detail) > 300:
        detail = detail[:297] + "..."
    return f"cannot use {where}: {type(hit).__name__}: {detail}"
