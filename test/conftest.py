"""Shared pytest fixtures for ROS tests: an isolated rclpy Context per test and a deadline-bounded spin helper.

``ros_context`` gives each test its own initialised :class:`rclpy.context.Context` on a random ROS domain with
discovery limited to this host (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, set by ``ros_env``), so that tests
running at the same time on one machine do not see each other's topics; it is shut down after the test.
``spin_until`` spins an executor until a predicate holds or a timeout passes (tests assert the predicate, never
wall-clock time).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # rclpy is imported where it is used, so core-only runs (a GPU box) need no ROS
    from rclpy.context import Context
    from rclpy.executors import Executor

SpinUntil = Callable[["Executor", Callable[[], bool], float], bool]

# A test module is ROS-facing (marker ``ros``) when it imports rclpy, a message or launch package or the node test
# harness, or marks itself with ``pytestmark = pytest.mark.ros``. CI runs ``pytest -m ros`` on the second distribution.
_ROS_IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(?:rclpy|[a-z_]+_msgs|[a-z_]+_srvs|node_harness|launch[a-z_]*)\b", re.M)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``ros`` marker."""
    config.addinivalue_line("markers", "ros: a ROS-facing test (real rclpy, messages, executables or launch)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of a ROS-facing module with ``ros`` (see ``_ROS_IMPORT``)."""
    ros_modules: dict[Path, bool] = {}
    for item in items:
        path = Path(str(item.path))
        if path not in ros_modules:
            ros_modules[path] = bool(_ROS_IMPORT.search(path.read_text(encoding="utf-8")))
        if ros_modules[path]:
            item.add_marker(pytest.mark.ros)


# Domain ids 1..101 are valid on every platform (0 is the default everybody uses; 102+ collide with ports on Linux).
_rng = random.SystemRandom()


def ros_domain_id() -> int:
    """A random ROS domain id in 1..101 for one test."""
    return _rng.randint(1, 101)


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> int:
    """Set ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a random ``ROS_DOMAIN_ID`` for one test; return the id.

    For code that initialises rclpy itself (a ``main()``); node tests use ``ros_context``.
    """
    domain_id = ros_domain_id()
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    return domain_id


@pytest.fixture
def ros_context(ros_env: int) -> Iterator[Context]:
    """An initialised rclpy Context on a random domain, localhost discovery only; shut down afterwards."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_env)
    try:
        yield context
    finally:
        context.try_shutdown()


def _spin_until(executor: Executor, predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return predicate()
        executor.spin_once(timeout_sec=min(0.05, remaining))
    return True


@pytest.fixture
def spin_until() -> SpinUntil:
    """``spin_until(executor, predicate, timeout) -> bool``: spin until ``predicate()`` holds or ``timeout`` s pass."""
    return _spin_until


# --- paths to the shared data (weights, samples, CamVid), read from ../shared unless the environment says otherwise

_REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder: ``$ESPNET_ROS_SHARED_DIR``, else ``../shared`` relative to the repository root."""
    return Path(os.environ.get("ESPNET_ROS_SHARED_DIR") or _REPO.parent / "shared")


@pytest.fixture(scope="session")
def weights_dir(shared_dir: Path) -> Path:
    """The folder of the 7 official weight files: ``$ESPNET_ROS_WEIGHTS_DIR``, else ``<shared>/espnet/weights``."""
    return Path(os.environ.get("ESPNET_ROS_WEIGHTS_DIR") or shared_dir / "espnet" / "weights")


@pytest.fixture(scope="session")
def samples_dir(shared_dir: Path) -> Path:
    """The two upstream sample frames: ``$ESPNET_ROS_SAMPLES_DIR``, else ``<shared>/espnet/samples``."""
    return Path(os.environ.get("ESPNET_ROS_SAMPLES_DIR") or shared_dir / "espnet" / "samples")
