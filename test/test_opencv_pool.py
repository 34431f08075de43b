"""espnet_ros sets OpenCV's pool workers to sleep as soon as a job is done (see ``espnet_ros/__init__.py``): the
setting must be in the environment when ``cv2`` is first imported, through every entry point, and a user's own value
wins. Checked in fresh interpreters, with a hook that records the setting at the moment ``cv2`` is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VAR = "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER"

SCRIPT = textwrap.dedent(
    f"""
    import importlib, importlib.abc, os, sys

    seen = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "cv2" and not seen:
                seen.append(os.environ.get("{VAR}"))
            return None

    sys.meta_path.insert(0, Watch())
    importlib.import_module(sys.argv[1])
    import cv2  # noqa: F401  (whether or not the module imported it)
    print(seen[0])
    """
)


def _value_at_cv2_import(module: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != VAR}
    if env_value is not None:
        env[VAR] = env_value
    proc = subprocess.run([sys.executable, "-c", SCRIPT, module], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("module", ["espnet_ros.segmentation_node", "espnet_ros.cli", "espnet_ros.bench",
                                    "espnet_ros.core.segmenter"])
def test_workers_sleep_setting_is_in_place_before_opencv_loads(module: str) -> None:
    assert _value_at_cv2_import(module, None) == "0"


def test_a_users_own_setting_wins() -> None:
    assert _value_at_cv2_import("espnet_ros.segmentation_node", "500") == "500"
