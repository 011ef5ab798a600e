"""Orbax checkpoints of a run directory: ``RUN/checkpoints/<step>/<item>/``.

Every loop saves a composite with a ``state`` item (StandardSave of a pytree of arrays); the prefix LM
adds ``meta`` (JSON) and ``data`` (the Grain iterator state of every process). The argument order is
the same everywhere: step, then what to save or restore.

Where the run directory lives:

* a local path or ``gs://``: Orbax writes there itself (on GCS through TensorStore's GCS driver,
  which retries with backoff, and a step counts once its ``commit_success.txt`` is written), with
  any number of processes;
* any other object store (``s3://``, ``memory://``, ...): Orbax's array writer (TensorStore) takes
  only local paths and GCS here (an ``s3://`` path fails with "Checkpoint path should be absolute"),
  so the run directory is *mirrored*: Orbax saves into a staging directory in this host's cache
  (:func:`videopoet.schemas.objstore.cache_root`), the step's files are then uploaded (S3 requests
  retry with backoff, :mod:`videopoet.schemas.objstore`) and ``RUN/checkpoints/<step>/``
  ``videopoet_commit.json``, listing every file with its size and sha256, is written last. A step
  exists only once that file does, so an upload cut off part-way is never seen as a step (the next
  save of that step clears what it left). A restore downloads the step's files, checks each against
  the commit file, and hands Orbax the local copy. With ``async_save`` the upload runs in the
  background after Orbax's own background write. One process writes a mirrored run (several
  processes need one directory they all see: a shared filesystem or ``gs://``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import fsspec
import jax
import orbax.checkpoint as ocp

from videopoet.schemas import objstore
from videopoet.schemas.errors import VideoPoetError
from videopoet.schemas.shards import sha256_of

objstore.configure()

CHECKPOINTS_DIR = "checkpoints"
COMMIT_FILE = "videopoet_commit.json"  # written last into a mirrored run's RUN/checkpoints/<step>/


class CheckpointError(VideoPoetError):
    """A checkpoint could not be written or read back intact."""


def mirrored(run_dir: str) -> bool:
    """Whether checkpoints of ``run_dir`` are staged locally and uploaded (module docstring)."""
    return objstore.is_remote(run_dir) and not str(run_dir).startswith("gs://")


def staging_dir(run_dir: str, what: str) -> str:
    """A fresh local directory in this host's cache for files of the object-store run ``run_dir``
    (``what``: "checkpoints", "tb", ...). Directories there of processes that are gone are removed."""
    base = os.path.join(objstore.cache_root(), "runs", hashlib.sha256(str(run_dir).encode()).hexdigest()[:16])
    os.makedirs(base, exist_ok=True)
    for name in os.listdir(base):
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    d = os.path.join(base, f"{os.getpid()}-{uuid.uuid4().hex[:8]}", what)
    os.makedirs(d)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checkpoints_path(run_dir: str) -> str:
    """``RUN/checkpoints`` (absolute for a local run directory, unchanged for a URI)."""
    root = run_dir.rstrip("/") if "://" in run_dir else os.path.abspath(run_dir)
    return f"{root}/{CHECKPOINTS_DIR}"


def abstract(template) -> Any:
    """ShapeDtypeStructs of a pytree of arrays (or of ``jax.eval_shape`` output): what a restore fills."""
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)


class Checkpoints:
    """The Orbax CheckpointManager of one run directory.

    ``async_save``: a save returns once the arrays are copied to the host and the files are written in
    the background (:meth:`close` waits for them); otherwise each save blocks until it is on disk.
    ``max_to_keep``: older steps are deleted (None keeps all), except ``keep_steps`` (steps a run must
    be able to go back to, such as the start of a learning-rate decay)."""

    def __init__(
        self,
        run_dir: str,
        *,
        max_to_keep: int | None = 2,
        async_save: bool = False,
        read_only: bool = False,
        keep_steps: Sequence[int] = (),
    ):
        self.run_dir = run_dir
        self.async_save = async_save
        # a reader neither creates the directory nor prunes old steps (Orbax's own read_only mode logs
        # three warnings per open, so it is not used)
        keep = None if read_only else max_to_keep
        policy = None
        if keep is not None and keep_steps:
            pp = ocp.checkpoint_managers.preservation_policy
            policy = pp.AnyPreservationPolicy([pp.LatestN(keep), pp.CustomSteps(sorted({int(s) for s in keep_steps}))])
            keep = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=not read_only,
            enable_async_checkpointing=async_save,
            preservation_policy=policy,
        )
        self.read_only = read_only
        self.max_to_keep = None if read_only else max_to_keep
        self.keep_steps = frozenset(int(x) for x in keep_steps)
        self.mirror = mirrored(run_dir)
        self._upload_thread: threading.Thread | None = None
        self._upload_error: BaseException | None = None
        if self.mirror:
            if jax.process_count() > 1:
                raise CheckpointError(
                    f"{run_dir}: a run directory on {run_dir.split('://')[0]}:// is written by one process; with "
                    f"{jax.process_count()} processes use a shared filesystem or gs://"
                )
            self.remote = checkpoints_path(run_dir)
            self.fs, self._root = fsspec.core.url_to_fs(self.remote)
            self._root = self._root.rstrip("/")
            self.local = staging_dir(run_dir, CHECKPOINTS_DIR)
            self.manager = ocp.CheckpointManager(self.local, options=options)
        else:
            self.manager = ocp.CheckpointManager(checkpoints_path(run_dir), options=options)

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        if self.mirror:
            return self._remote_steps()
        return sorted(self.manager.all_steps())

    # ------------------------------------------------------------------ mirrored run directories
    def _remote_steps(self, committed: bool = True) -> list[int]:
        """Steps under RUN/checkpoints/ (``committed``: only those whose commit file exists)."""
        self.fs.invalidate_cache(self._root)
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._root, detail=False)]
        except FileNotFoundError:
            return []
        steps = sorted(int(n) for n in names if n.isdigit())
        if not committed:
            return steps
        return [s for s in steps if self.fs.exists(f"{self._root}/{s}/{COMMIT_FILE}")]

    def _upload(self, step: int) -> None:
        """Copy the staged step to RUN/checkpoints/<step>/, commit file last; prune old steps. A failure
        (after the client's retries) is one :class:`CheckpointError`; the step then stays uncommitted."""
        try:
            self._upload_files(step)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - the store's error (botocore, aiohttp, OSError), in one line
            raise CheckpointError(
                f"uploading checkpoint step {step} to {self.remote}/{step} failed, the step is not committed: "
                f"{type(e).__name__}: {e}"
            ) from e

    def _upload_files(self, step: int) -> None:
        src = os.path.join(self.local, str(step))
        dst = f"{self._root}/{step}"
        if self.fs.exists(dst):  # what a cut-off upload of this step left (never committed) or an older save
            self.fs.rm(dst, recursive=True)
            self.fs.invalidate_cache(dst)
        files = []
        for d, _, names in sorted(os.walk(src)):
            for n in sorted(names):
                path = os.path.join(d, n)
                rel = os.path.relpath(path, src).replace(os.sep, "/")
                digest, size = sha256_of(path)
                self.fs.put_file(path, f"{dst}/{rel}")
                files.append({"path": rel, "bytes": size, "sha256": digest})
        commit = {
            "step": int(step),
            "files": files,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        self.fs.pipe_file(f"{dst}/{COMMIT_FILE}", (json.dumps(commit, indent=2, sort_keys=True) + "\n").encode())
        self.fs.invalidate_cache(self._root)
        self._prune(keep_from=step)

    def _prune(self, keep_from: int) -> None:
        """Remove committed steps beyond ``max_to_keep`` except ``keep_steps`` (commit file first, so a
        step is gone at once) and uncommitted step dirs other than the newest (leftovers of cut-off uploads)."""
        committed = self._remote_steps()
        drop = [x for x in committed[: -self.max_to_keep] if x not in self.keep_steps] if self.max_to_keep else []
        for s in self._remote_steps(committed=False):
            if s in drop or (s not in committed and s < keep_from):
                if s in committed:
                    self.fs.rm_file(f"{self._root}/{s}/{COMMIT_FILE}")
                self.fs.rm(f"{self._root}/{s}", recursive=True)
        self.fs.invalidate_cache(self._root)

    def _upload_after_wait(self, step: int) -> None:
        try:
            self.manager.wait_until_finished()
            self._upload(step)
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread by _join_upload
            self._upload_error = e

    def _join_upload(self) -> None:
        if self._upload_thread is not None:
            self._upload_thread.join()
            self._upload_thread = None
        if self._upload_error is not None:
            e, self._upload_error = self._upload_error, None
            raise e

    def _fetch(self, step: int) -> None:
        """Make the committed ``step`` available to the local manager: download it and check every
        file against the commit file (a step saved by this process is already staged)."""
        local = os.path.join(self.local, str(step))
        if os.path.isdir(local):
            return
        remote = f"{self._root}/{step}"
        try:
            commit = json.loads(self.fs.cat_file(f"{remote}/{COMMIT_FILE}"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.run_dir} has no checkpoint at step {step}") from None
        tmp = os.path.join(self.local, f".fetch-{step}-{uuid.uuid4().hex[:8]}")
        try:
            for f in commit["files"]:
                path = os.path.join(tmp, *f["path"].split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                try:
                    self.fs.get_file(f"{remote}/{f['path']}", path)
                except FileNotFoundError:
                    raise CheckpointError(
                        f"checkpoint step {step} of {self.run_dir} is damaged: {f['path']} is missing"
                    ) from None
                if sha256_of(path) != (f["sha256"], f["bytes"]):
                    raise CheckpointError(
                        f"checkpoint step {step} of {self.run_dir} is damaged: {f['path']} differs from its "
                        "commit record"
                    )
            os.rename(tmp, local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.manager.reload()

    def save(self, step: int, state, *, meta: dict[str, Any] | None = None, data_iter=None) -> None:
        """Save ``state`` (and the JSON ``meta``, the Grain ``data_iter`` state when given) as ``step``."""
        if self.read_only:
            raise PermissionError(f"{self.run_dir}: checkpoints opened read-only")
        items: dict[str, Any] = {"state": ocp.args.StandardSave(state)}
        if meta is not None:
            items["meta"] = ocp.args.JsonSave(meta)
        if data_iter is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        if self.mirror:
            self._join_upload()  # the previous step's upload (and its error, if any)
        self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)
        if not self.async_save:
            self.manager.wait_until_finished()
        if self.mirror:
            if self.async_save:
                self._upload_thread = threading.Thread(target=self._upload_after_wait, args=(int(step),), daemon=True)
                self._upload_thread.start()
            else:
                self._upload(int(step))

    def restore(self, step: int, abstract_state, *, meta: bool = False, data_iter=None) -> tuple[Any, dict | None]:
        """(state, meta or None) of ``step``. ``abstract_state`` gives shapes, dtypes and shardings (see
        :func:`abstract`); ``data_iter`` (a Grain iterator) is restored in place when given."""
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract_state)}
        if meta:
            items["meta"] = ocp.args.JsonRestore()
        if data_iter is not None:
            import grain

            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        if self.mirror:
            self._join_upload()
            self._fetch(int(step))
        out = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        return out["state"], (out["meta"] if meta else None)

    def restore_subtree(self, step: int | None, subtree) -> tuple[int, Any]:
        """(step, part of the saved ``state``) without reading the rest: ``subtree`` names the top-level
        entries wanted ({"ema": spec}, {"params": spec, "vq": spec}), each a pytree of ShapeDtypeStructs.

        Loaded onto one device whatever mesh saved it, so the optimizer moments never enter memory.
        ``step`` None: the latest. FileNotFoundError when there is no such checkpoint."""
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"{self.run_dir}: {CHECKPOINTS_DIR}/ holds no steps")
        step = steps[-1] if step is None else int(step)
        if step not in steps:
            raise FileNotFoundError(f"{self.run_dir} has no checkpoint at step {step} (has {steps})")
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        item = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), subtree)
        args = ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True
        )
        if self.mirror:
            self._join_upload()
            self._fetch(step)
        return step, self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]

    def delete(self, step: int) -> None:
        """Remove the checkpoint of ``step`` (a run going back to an earlier step drops the later ones)."""
        if self.read_only:
            raise PermissionError(f"{self.run_dir}: checkpoints opened read-only")
        self.manager.wait_until_finished()
        self.manager.delete(int(step))

    def wait(self) -> None:
        self.manager.wait_until_finished()
        if self.mirror:
            self._join_upload()

    def close(self) -> None:
        """Wait for pending saves (and uploads), then release the manager (and the staging copy)."""
        try:
            self.manager.wait_until_finished()
            if self.mirror:
                self._join_upload()
        finally:
            self.manager.close()
            if self.mirror:
                shutil.rmtree(os.path.dirname(self.local), ignore_errors=True)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_subtree(run_dir: str, subtree, step: int | None = None) -> tuple[int, Any]:
    """:meth:`Checkpoints.restore_subtree` of a run directory opened read-only (what loaders use)."""
    with Checkpoints(run_dir, read_only=True) as ckpts:
        return ckpts.restore_subtree(step, subtree)
