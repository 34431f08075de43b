"""Camera-sized images between processes: the shipped Fast DDS profile, and the variable that makes Fast DDS read it.

Fast DDS's default shared-memory segment is 512 KiB; best-effort images larger than that are nearly all lost between
processes on one host. ``config/fastdds_shm.xml`` gives every participant a 32 MiB segment. Fast DDS reads an XML
profile from an environment variable whose name depends on its major version: Fast DDS 3 (ROS 2 Kilted and newer)
reads ``FASTDDS_DEFAULT_PROFILES_FILE``, Fast DDS 2 (Jazzy: 2.14, Humble: 2.6) reads
``FASTRTPS_DEFAULT_PROFILES_FILE``. This module owns that choice, for the launch file, ``tools/demo.sh``, the bench and
the tests: :func:`profile_environment` says which variables to set (only those the user has not set),
:func:`profile_hint` is the one sentence that tells a user how to fix frames lost in transport. The installed
version is told by the library the ROS installation ships (Fast DDS 3 renamed ``libfastrtps`` to ``libfastdds``).
``python -m espnet_ros.transport`` prints ``export NAME=VALUE`` lines for a shell.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "PROFILE_VARIABLES",
    "TransportError",
    "fastdds_major",
    "profile_environment",
    "profile_hint",
    "profile_variables",
    "shipped_profile",
]

PROFILE_VARIABLES: dict[int, str] = {3: "FASTDDS_DEFAULT_PROFILES_FILE", 2: "FASTRTPS_DEFAULT_PROFILES_FILE"}
"""Fast DDS major version -> the environment variable it reads its XML profile from."""

_LIBRARIES: tuple[tuple[str, int], ...] = (("libfastdds.so", 3), ("libfastrtps.so", 2))


class TransportError(RuntimeError):
    """The shipped Fast DDS profile cannot be found."""


def shipped_profile() -> Path:
    """``config/fastdds_shm.xml``: from the installed share directory, else from the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("espnet_ros")) / "config" / "fastdds_shm.xml"
        if installed.is_file():
            return installed
    except (ImportError, LookupError, ValueError, OSError):  # not installed through ament (a source checkout)
        pass
    source = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"
    if source.is_file():
        return source
    raise TransportError("cannot find config/fastdds_shm.xml (the shipped Fast DDS profile): install espnet_ros with "
                         "colcon or pip (not pip -e), or run from a source checkout")


def fastdds_major(environ: Mapping[str, str] | None = None) -> int | None:
    """The installed Fast DDS's major version (2 or 3), or None when no Fast DDS library is found.

    Looks for ``libfastdds.so*`` (3) and ``libfastrtps.so*`` (2) in ``LD_LIBRARY_PATH`` (set by a sourced ROS
    installation and by the PyPI wheels' bootstrapper), ``$AMENT_PREFIX_PATH/lib`` and the Python prefix's ``lib``
    (where the PyPI wheels put them); the first folder that has one decides.
    """
    env = os.environ if environ is None else environ
    return _major_in(env.get("LD_LIBRARY_PATH", ""), env.get("AMENT_PREFIX_PATH", ""))


@functools.cache
def _major_in(ld_library_path: str, ament_prefix_path: str) -> int | None:
    folders = [Path(d) for d in ld_library_path.split(os.pathsep) if d]
    folders += [Path(p) / "lib" for p in ament_prefix_path.split(os.pathsep) if p]
    folders.append(Path(sys.prefix) / "lib")
    for folder in folders:
        for stem, major in _LIBRARIES:
            if folder.is_dir() and any(folder.glob(stem + "*")):
                return major
    return None


def profile_variables(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The variable(s) the installed Fast DDS reads its profile from; both names when the version is unknown."""
    major = fastdds_major(environ)
    return (PROFILE_VARIABLES[major],) if major in PROFILE_VARIABLES else tuple(PROFILE_VARIABLES.values())


def profile_environment(environ: Mapping[str, str] | None = None, profile: Path | None = None) -> dict[str, str]:
    """The variables to add to ``environ`` so that the installed Fast DDS reads a profile; empty if it already does.

    A variable the installed Fast DDS reads that is already set (the user's choice) is kept. When only the other
    version's name is set (a profile exported for the other Fast DDS), its value is carried over to the name that
    is read. Otherwise the value is ``profile`` (default: :func:`shipped_profile`).
    """
    env = os.environ if environ is None else environ
    names = profile_variables(env)
    if any(env.get(n) for n in names):
        return {}
    others = [env[n] for n in PROFILE_VARIABLES.values() if n not in names and env.get(n)]
    value = others[0] if others else str(profile if profile is not None else shipped_profile())
    return dict.fromkeys(names, value)


def profile_hint(environ: Mapping[str, str] | None = None) -> str:
    """How to make camera-sized images cross processes, naming the variable the installed Fast DDS reads."""
    names = " or ".join(profile_variables(environ))
    return (f"for camera-sized images between processes on Fast DDS, set {names} to "
            "share/espnet_ros/config/fastdds_shm.xml in the camera's process and this one (segment.launch.py does "
            "this for what it starts)")


def main() -> int:
    """Print ``export NAME=VALUE`` for each variable :func:`profile_environment` adds (for ``eval`` in a shell)."""
    for name, value in profile_environment().items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
