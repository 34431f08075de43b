"""Backend selection: what ``auto`` means on this machine, and building the backend asked for.

On the CPU ``auto`` is ``$ESPNET_ROS_BACKEND`` when set, else :data:`DEFAULT_CPU_BACKEND` (the fastest exact path
measured, docs/performance.md) when a C++ compiler is present and ``fused`` when not. A build that failed here
before is recorded in the cache, so ``auto`` takes ``fused`` at once on later starts instead of compiling again,
while a backend asked for by name always builds again and raises what fails.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import torch
from torch import nn

from espnet_ros.core.accel.backends import (
    Backend,
    CompiledBackend,
    EagerBackend,
    FusedBackend,
    compiler_available,
)
from espnet_ros.core.accel.cache import ArtifactCache, cache_dir
from espnet_ros.core.accel.fused import FusedESPNet
from espnet_ros.core.errors import BackendError
from espnet_ros.core.weights import WeightsPreset

__all__ = ["BACKENDS", "BACKEND_ENV", "DEFAULT_CPU_BACKEND", "BackendName", "make_backend", "resolve_backend"]

_log = logging.getLogger(__name__)

BACKEND_ENV = "ESPNET_ROS_BACKEND"

BackendName = Literal["auto", "eager", "fused", "compiled"]
BACKENDS: tuple[str, ...] = ("auto", "eager", "fused", "compiled")

DEFAULT_CPU_BACKEND: BackendName = "compiled"
"""What ``auto`` means on the CPU (when a C++ compiler is present; else ``fused``): the fastest exact path measured."""


def _check_name(backend: str, what: str) -> str:
    name = backend.strip().lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}{what}; expected one of {', '.join(BACKENDS)}")
    return name


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete backend for ``device``.

    On the CPU ``auto`` is ``$ESPNET_ROS_BACKEND`` when set, else :data:`DEFAULT_CPU_BACKEND` (``compiled``) when a
    C++ compiler is present and ``fused`` (logged) when not. On CUDA it is ``eager`` (the Segmenter then runs its
    GPU pipeline). Raises :class:`BackendError` for unknown names and CPU-only backends on another device.
    """
    name = _check_name(backend, "")
    if name == "auto":
        if device.type != "cpu":
            return "eager"
        env = os.environ.get(BACKEND_ENV, "")
        if env.strip():
            name = _check_name(env, f" in ${BACKEND_ENV}")
            if name != "auto":
                return name
        if DEFAULT_CPU_BACKEND == "compiled" and not compiler_available():
            _log.info("backend auto: no C++ compiler for AOTInductor, using 'fused' (eager, slower)")
            return "fused"
        return DEFAULT_CPU_BACKEND
    if device.type != "cpu" and name != "eager":
        raise BackendError(f"backend {name!r} runs on the CPU only; on {device} use 'auto' or 'eager'")
    return name


def make_backend(
    backend: str,
    model: nn.Module,
    preset: WeightsPreset,
    network_size: tuple[int, int],
    *,
    device: torch.device | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> Backend:
    """Build the backend called ``backend`` (``auto`` resolved for ``device``) around a loaded reference ``model``.

    Raises:
        BackendError: unknown name, a missing C++ compiler or an artifact that fails.
    """
    dev = device or torch.device("cpu")
    name = resolve_backend(backend, dev)
    if name == "eager":
        return EagerBackend(model, preset.output_stride)
    fused = FusedESPNet(model)
    if name == "fused":
        return FusedBackend(fused)
    store = ArtifactCache(cache_dir(cache))
    # name == "compiled"
    # asked for by name (argument or environment): build again even if it failed here before, and raise
    by_name = _check_name(backend, "") != "auto" or bool(os.environ.get(BACKEND_ENV, "").strip())
    try:
        return CompiledBackend(fused, preset, network_size, store, retry_failed=by_name)
    except BackendError as exc:
        if by_name:
            raise  # the caller wants to know
        _log.warning("backend auto: the compiled backend is unusable here (%s); using 'fused' (eager, "
                     "slower)", exc)
        return FusedBackend(fused)
