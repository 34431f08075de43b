"""The artifact cache: compiled and exported networks kept on disk, keyed, verified, built once, never trusted blindly.

An artifact is named after everything that could make it stale (:class:`ArtifactKey`: preset name and weights
sha256, network size, the fused graph's version, the torch version and the CPU's vector ISA).
:class:`ArtifactCache` writes artifacts atomically, builds them under a file lock, hashes them, opens a fresh one in a
throw-away process first (:func:`trial_in_subprocess`) and checks it on every load; a corrupt or wrong artifact is
deleted and rebuilt, never used, and a build that fails is recorded beside it (``<name>.failed.json``). Because
the node loads shared objects from this folder, the folder and every file read from it must belong to this user
and be writable by nobody else (as ssh treats a private key); the folder is created ``0700``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from espnet_ros.core.accel.fused import ACCEL_VERSION
from espnet_ros.core.errors import BackendError
from espnet_ros.core.weights import WeightsPreset

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_DIR",
    "ArtifactCache",
    "ArtifactKey",
    "cache_dir",
    "check_private",
    "file_sha256",
    "trial_in_subprocess",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_DIR_ENV = "ESPNET_ROS_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/espnet_ros/compiled")


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The artifact cache: ``explicit``, else ``$ESPNET_ROS_CACHE_DIR``, else ``~/.cache/espnet_ros/compiled``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(CACHE_DIR_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR.expanduser()


def _cpu_isa() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


@dataclass(frozen=True)
class ArtifactKey:
    """Everything a compiled or exported artifact depends on; its digest names the file.

    Changing any field (another preset or weights file, network size, graph version, torch version, CPU vector
    ISA) gives another name, so a stale artifact is never picked up.
    """

    kind: str
    preset: str
    weights_sha256: str
    network_size: tuple[int, int]
    batch: str
    accel_version: int
    torch_version: str
    cpu_isa: str

    @classmethod
    def for_preset(cls, kind: str, preset: WeightsPreset, network_size: tuple[int, int]) -> ArtifactKey:
        """The key of ``kind`` (``aoti``, ``prep-bgr``, ``prep-rgb``) for ``preset`` at ``network_size``."""
        return cls(
            kind=kind, preset=preset.name, weights_sha256=preset.sha256, network_size=tuple(network_size),  # type: ignore[arg-type]
            batch="1", accel_version=ACCEL_VERSION, torch_version=torch.__version__, cpu_isa=_cpu_isa(),
        )

    def fields(self) -> dict[str, Any]:
        """The key as a JSON-able dict."""
        d = asdict(self)
        d["network_size"] = list(self.network_size)
        return d

    def digest(self) -> str:
        """Full sha256 of the canonical JSON of the key."""
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()

    def stem(self) -> str:
        """File stem: ``<kind>-<preset>-<w>x<h>-<first 16 hex digits of the digest>``."""
        w, h = self.network_size
        return f"{self.kind}-{self.preset}-{w}x{h}-{self.digest()[:16]}"


def file_sha256(path: Path) -> str:
    """Full sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_private(path: Path, what: str) -> None:
    """Refuse ``path`` unless it belongs to this user and nobody else can write it (as ssh treats a private key).

    The node loads and runs what the cache holds, so whoever can write the folder or a file in it could run code
    in the node: a folder or file owned by another user, or writable by its group or by others, is refused.

    Raises:
        BackendError: naming the path, what is wrong and the command that fixes it.
    """
    st = path.stat()
    uid = os.geteuid()
    kind = "folder" if stat.S_ISDIR(st.st_mode) else "file"
    if st.st_uid != uid:
        raise BackendError(f"{what} {path} is owned by uid {st.st_uid}, not by this user (uid {uid}); whoever owns "
                           f"it could run code in this process. Delete it (it is rebuilt) or point {CACHE_DIR_ENV} "
                           "at a folder of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = "700" if kind == "folder" else "600"
        raise BackendError(f"{what} {path} is writable by its group or by others (mode "
                           f"{stat.S_IMODE(st.st_mode):03o}); anyone who can write it could run code in this "
                           f"process. Fix it with: chmod {mode} {path}")


def trial_in_subprocess(code: str, *args: str, timeout: float = 300.0) -> str | None:
    """Run ``python -c code args...`` and return ``None`` if it exits 0, else what went wrong, in words.

    Native code (a compiled package's shared library, its loader) can crash the process that loads it. A freshly
    built artifact is therefore opened first by a throw-away interpreter: a crash there (a signal such as SIGSEGV) is
    reported as an error instead of taking the node down.
    """
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        return f"did not load within {timeout:.0f} s in a separate process"
    if proc.returncode == 0:
        return None
    last = (proc.stderr.strip().splitlines() or [""])[-1][:300]
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        return f"crashed the separate process that loaded it ({sig})" + (f": {last}" if last else "")
    return f"failed to load in a separate process (exit {proc.returncode})" + (f": {last}" if last else "")


class ArtifactCache:
    """A folder of built artifacts, each with a JSON sidecar holding its key and sha256.

    :meth:`load_or_build` loads a verified artifact or builds it under a file lock (so two processes starting at
    once build it once), writing it atomically (temporary file in the same folder, then rename; the sidecar is
    renamed last and marks the artifact complete). Loading checks the sidecar's key, the file's hash and finally
    the caller's ``check`` on the loaded object; any failure deletes the artifact and rebuilds it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, key: ArtifactKey, suffix: str) -> tuple[Path, Path]:
        """``(artifact, sidecar)`` paths of ``key``."""
        stem = key.stem()
        return self.root / f"{stem}{suffix}", self.root / f"{stem}.json"

    def failure_path(self, key: ArtifactKey) -> Path:
        """Where a failed build of ``key`` is recorded (see :meth:`load_or_build`'s ``retry_failed``)."""
        return self.root / f"{key.stem()}.failed.json"

    def recorded_failure(self, key: ArtifactKey) -> str | None:
        """Why the last build of ``key`` here failed, with when and where it is recorded; ``None`` if it did not."""
        record = self.failure_path(key)
        try:
            meta = json.loads(record.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != key.fields():
            return None
        return f"{meta.get('reason', 'unknown reason')} (recorded {meta.get('when', '?')} in {record}; delete it to " \
               "try again)"

    def _record_failure(self, key: ArtifactKey, reason: str) -> None:
        record = self.failure_path(key)
        meta = {"key": key.fields(), "reason": reason, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        with contextlib.suppress(OSError):  # the failure itself is raised either way
            tmp = record.with_name(f".{record.name}.tmp")
            tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
            os.replace(tmp, record)

    @contextlib.contextmanager
    def _lock(self, key: ArtifactKey) -> Iterator[None]:
        lock_path = self.root / f"{key.stem()}.lock"
        with lock_path.open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _valid_sidecar(self, key: ArtifactKey, artifact: Path, sidecar: Path, trialled: bool = False) -> str | None:
        """``None`` if ``artifact`` is complete and matches ``key`` (and passed its load trial if ``trialled``)."""
        if not artifact.is_file() or not sidecar.is_file():
            return "not built yet"
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable sidecar {sidecar.name} ({exc})"
        if not isinstance(meta, dict) or meta.get("key") != key.fields():
            return f"sidecar {sidecar.name} describes another build"
        if meta.get("sha256") != file_sha256(artifact):
            return f"{artifact.name} does not match its recorded sha256 (truncated or modified)"
        if trialled and meta.get("load_trial") != "passed":
            return f"{artifact.name} was never loaded in a separate process first (built by an older espnet_ros)"
        return None

    @staticmethod
    def _remove(*paths: Path) -> None:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()

    def _prune_older(self, key: ArtifactKey, suffix: str) -> None:
        """Delete artifacts of the same kind, preset and size built by an older graph version (never used again)."""
        w, h = key.network_size
        for sidecar in self.root.glob(f"{key.kind}-{key.preset}-{w}x{h}-*.json"):
            try:
                old = json.loads(sidecar.read_text()).get("key", {})
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(old, dict) and isinstance(old.get("accel_version"), int) \
                    and old["accel_version"] < key.accel_version:
                _log.info("removing %s (graph version %d < %d)", sidecar.with_suffix(suffix).name,
                          old["accel_version"], key.accel_version)
                self._remove(sidecar.with_suffix(suffix), sidecar, sidecar.with_suffix(".lock"))

    def load_or_build(
        self,
        key: ArtifactKey,
        suffix: str,
        build: Callable[[Path], None],
        load: Callable[[Path], T],
        check: Callable[[T], str | None],
        trial: Callable[[Path], str | None] | None = None,
        *,
        retry_failed: bool = True,
    ) -> T:
        """Return the loaded artifact of ``key``, building it with ``build(path)`` first if needed.

        ``load(path)`` opens it; ``check(obj)`` returns ``None`` if it computes the right thing, else a reason.
        ``trial(path)``, if given, opens a freshly built artifact somewhere it cannot hurt this process (see
        :func:`trial_in_subprocess`) and returns ``None`` or why it failed; only an artifact that passed it is put in
        place, and the sidecar records that (artifacts without that record are rebuilt).

        A build that fails (``build`` raises, or the fresh artifact fails its trial, load or check) is recorded next
        to where the artifact would be (:meth:`failure_path`, with the reason and the time). With
        ``retry_failed=False`` a recorded failure of the same key is raised again at once instead of building again
        (a build can take minutes and fail the same way on every start); a later successful build clears it.

        Raises:
            BackendError: the folder is not writable, it or a cached file is not private to this user
                (:func:`check_private`), a build fails, or (``retry_failed=False``) one failed before.
        """
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the cache directory {self.root} ({exc}); set {CACHE_DIR_ENV} to a "
                               "writable folder") from exc
        check_private(self.root, "the artifact cache folder")
        artifact, sidecar = self.paths(key, suffix)
        with self._lock(key):
            for path in (artifact, sidecar):
                if path.exists():
                    check_private(path, "the cached file")
            if not retry_failed and (failed := self.recorded_failure(key)) is not None:
                raise BackendError(f"building {artifact.name} failed here before: {failed}")
            try:
                obj = self._load_or_build(key, artifact, sidecar, suffix, build, load, check, trial)
            except BackendError as exc:
                self._record_failure(key, str(exc))
                raise
            self._remove(self.failure_path(key))
            return obj

    def _load_or_build(
        self,
        key: ArtifactKey,
        artifact: Path,
        sidecar: Path,
        suffix: str,
        build: Callable[[Path], None],
        load: Callable[[Path], T],
        check: Callable[[T], str | None],
        trial: Callable[[Path], str | None] | None,
    ) -> T:
        """:meth:`load_or_build` under the lock; any failure of a fresh build is a :class:`BackendError`."""
        why = self._valid_sidecar(key, artifact, sidecar, trialled=trial is not None)
        if why is None:
            try:
                obj = load(artifact)
                why = check(obj)
            except Exception as exc:  # a damaged artifact can fail in any way inside torch
                why = f"cannot load it ({type(exc).__name__}: {exc})"
            if why is None:
                _log.info("using cached %s", artifact)
                return obj
            _log.warning("cached artifact %s is unusable: %s; rebuilding it", artifact, why)
            self._remove(artifact, sidecar)
        elif why != "not built yet":
            _log.warning("cached artifact %s is unusable: %s; rebuilding it", artifact, why)
            self._remove(artifact, sidecar)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{key.stem()}-", dir=self.root))
        try:
            tmp_artifact = tmp_dir / artifact.name
            t0 = time.monotonic()
            try:
                build(tmp_artifact)
            except Exception as exc:  # a compiler can fail in many ways (lowering, C++ compiler, linker)
                raise BackendError(f"building {artifact.name} failed ({type(exc).__name__}: "
                                   f"{str(exc).strip()[:300]}); torch {torch.__version__}: please report this; "
                                   "use backend 'fused' meanwhile") from exc
            meta: dict[str, Any] = {"key": key.fields(), "sha256": file_sha256(tmp_artifact),
                                    "built_s": round(time.monotonic() - t0, 1)}
            if trial is not None:
                failed = trial(tmp_artifact)
                if failed is not None:
                    raise BackendError(f"freshly built {artifact.name} {failed}; torch {torch.__version__}: "
                                       "please report this; use backend 'fused' meanwhile")
                meta["load_trial"] = "passed"
            tmp_sidecar = tmp_dir / sidecar.name
            tmp_sidecar.write_text(json.dumps(meta, indent=1, sort_keys=True))
            for path in (tmp_artifact, tmp_sidecar):  # private whatever the umask (check_private on every load)
                path.chmod(0o700 if path.is_dir() else 0o600)
            os.replace(tmp_artifact, artifact)
            os.replace(tmp_sidecar, sidecar)
        finally:
            self._remove(tmp_dir)
        _log.info("built %s in %.1f s", artifact, meta["built_s"])
        self._prune_older(key, suffix)
        try:
            obj = load(artifact)
        except Exception as exc:
            self._remove(artifact, sidecar)
            raise BackendError(f"freshly built {artifact} cannot be loaded: {exc}") from exc
        why = check(obj)
        if why is not None:
            self._remove(artifact, sidecar)
            raise BackendError(f"freshly built {artifact} computes wrong labels ({why}); please report this with "
                               f"your torch version ({torch.__version__}); use backend 'fused' meanwhile")
        return obj
