"""The core layer never imports ROS: every module under espnet_ros/core imports with rclpy, message packages and
launch blocked (in a fresh interpreter, so nothing is cached from other tests)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import pkgutil
    import sys

    BLOCKED = ("rclpy", "sensor_msgs", "std_msgs", "launch", "launch_ros", "launch_testing", "rosidl_runtime_py",
               "builtin_interfaces", "geometry_msgs", "nav_msgs", "visualization_msgs", "diagnostic_msgs", "cv_bridge")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BLOCKED or top.startswith("launch"):
                raise ImportError(f"core imported the ROS module {name!r}")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker does not work")

    import espnet_ros.core as core

    names = [core.__name__]
    for info in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
    for name in core.__all__:
        getattr(core, name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    if leaked:
        raise SystemExit(f"ROS modules loaded: {leaked}")
    print("\\n".join(names))
    """
)


def test_every_core_module_imports_without_ros() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = set(proc.stdout.split())
    core_files = (REPO / "espnet_ros" / "core").glob("*.py")
    expected = {f"espnet_ros.core.{p.stem}" for p in core_files if p.stem != "__init__"}
    assert expected <= imported, expected - imported
    assert {"espnet_ros.core.render", "espnet_ros.core.evaluate", "espnet_ros.core.segmenter"} <= imported
