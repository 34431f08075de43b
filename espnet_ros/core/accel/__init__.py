"""Fast exact CPU inference: the fused network, its compiled and exported forms, their cache, and the choice of one.

The subpackage by responsibility: :mod:`~espnet_ros.core.accel.fused` (:class:`FusedESPNet`, the inference-only
rewrite of ESPNet), :mod:`~espnet_ros.core.accel.backends` (what runs it: ``eager``, ``fused``,
``compiled``), :mod:`~espnet_ros.core.accel.cache` (the verified on-disk artifacts and their permission checks),
:mod:`~espnet_ros.core.accel.preprocess` (the compiled preprocessing of frames twice the network size) and
:mod:`~espnet_ros.core.accel.select` (``auto`` and :func:`make_backend`). The public names are re-exported here.
"""

from __future__ import annotations

from espnet_ros.core.accel.backends import (
    Backend,
    CompiledBackend,
    EagerBackend,
    FusedBackend,
    compiler_available,
)
from espnet_ros.core.accel.cache import (
    CACHE_DIR_ENV,
    DEFAULT_CACHE_DIR,
    ArtifactCache,
    ArtifactKey,
    cache_dir,
    check_private,
    file_sha256,
    trial_in_subprocess,
)
from espnet_ros.core.accel.fused import ACCEL_VERSION, FusedESPNet, flush_subnormals
from espnet_ros.core.accel.preprocess import CompiledPreprocess, block_sums_probe
from espnet_ros.core.accel.select import (
    BACKEND_ENV,
    BACKENDS,
    DEFAULT_CPU_BACKEND,
    BackendName,
    make_backend,
    resolve_backend,
)
from espnet_ros.core.errors import BackendError

__all__ = [
    "ACCEL_VERSION",
    "BACKENDS",
    "BACKEND_ENV",
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_CPU_BACKEND",
    "ArtifactCache",
    "ArtifactKey",
    "Backend",
    "BackendError",
    "BackendName",
    "CompiledBackend",
    "CompiledPreprocess",
    "EagerBackend",
    "FusedBackend",
    "FusedESPNet",
    "block_sums_probe",
    "cache_dir",
    "check_private",
    "compiler_available",
    "file_sha256",
    "flush_subnormals",
    "make_backend",
    "resolve_backend",
    "trial_in_subprocess",
]
