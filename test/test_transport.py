"""espnet_ros.transport: which variable carries the Fast DDS profile, and when it is set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from espnet_ros.transport import (
    PROFILE_VARIABLES,
    fastdds_major,
    profile_environment,
    profile_hint,
    profile_variables,
    shipped_profile,
)

FASTDDS_3, FASTDDS_2 = PROFILE_VARIABLES[3], PROFILE_VARIABLES[2]


def _lib(tmp_path: Path, name: str) -> dict[str, str]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / name).write_bytes(b"")
    return {"LD_LIBRARY_PATH": str(folder)}


def test_the_installed_library_tells_the_version(tmp_path: Path) -> None:
    assert fastdds_major(_lib(tmp_path, "libfastrtps.so.2.14")) == 2  # Jazzy
    assert fastdds_major(_lib(tmp_path, "libfastdds.so.3.2")) == 3  # Kilted
    assert profile_variables(_lib(tmp_path, "libfastrtps.so.2.6")) == (FASTDDS_2,)
    assert fastdds_major() in (2, 3)  # the wheels of this venv ship one of them


def test_the_shipped_profile_goes_under_the_name_that_is_read(tmp_path: Path) -> None:
    jazzy = _lib(tmp_path, "libfastrtps.so.2.14")
    assert profile_environment(jazzy) == {FASTDDS_2: str(shipped_profile())}
    assert shipped_profile().name == "fastdds_shm.xml" and shipped_profile().is_file()
    assert profile_environment({}) == dict.fromkeys(profile_variables({}), str(shipped_profile()))


def test_the_users_setting_is_kept_and_a_profile_for_the_other_version_carried_over(tmp_path: Path) -> None:
    jazzy = _lib(tmp_path, "libfastrtps.so.2.14")
    assert profile_environment({**jazzy, FASTDDS_2: "/mine.xml"}) == {}
    # exported for Fast DDS 3 (as an older README said) on a Fast DDS 2 system: the same file, under the read name
    assert profile_environment({**jazzy, FASTDDS_3: "/mine.xml"}) == {FASTDDS_2: "/mine.xml"}
    kilted = _lib(tmp_path, "libfastdds.so.3.2")
    assert profile_environment({**kilted, FASTDDS_3: "/mine.xml"}) == {}
    assert profile_environment({**kilted, FASTDDS_2: "/mine.xml"}) == {FASTDDS_3: "/mine.xml"}


@pytest.mark.parametrize(("library", "named", "not_named"), [("libfastrtps.so.2.14", FASTDDS_2, FASTDDS_3),
                                                            ("libfastdds.so.3.2", FASTDDS_3, FASTDDS_2)])
def test_the_hint_names_the_variable_that_is_read(tmp_path: Path, library: str, named: str, not_named: str) -> None:
    hint = profile_hint(_lib(tmp_path, library))
    assert named in hint and not_named not in hint and "fastdds_shm.xml" in hint


def test_the_module_prints_exports_for_a_shell() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "espnet_ros.transport"], env=env, capture_output=True, text=True,
                         check=True).stdout
    names = profile_variables()
    assert out.splitlines() == [f"export {n}={shipped_profile()}" for n in names]
