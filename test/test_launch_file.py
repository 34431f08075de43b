"""launch/segment.launch.py evaluated with the launch API: typed arguments, the environment it gives, the rviz2 check.

launch and launch_ros are not on PyPI: this module is skipped where they cannot be imported (a plain venv) and where
espnet_ros is not in the ament index (the launch file reads its share directory); in a ROS installation with
espnet_ros built by colcon it runs with pytest. The end-to-end launch test is test/test_launch.py (launch_test).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("launch", reason="launch is not on PyPI; these tests run in a ROS 2 installation")
pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; these tests run in a ROS 2 installation")

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchContext, LaunchDescription, LaunchService
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, RegisterEventHandler, SetEnvironmentVariable
from launch.event_handlers import OnProcessStart
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.launch_description_sources.python_launch_file_utilities import load_python_launch_file_as_module
from launch.utilities import perform_substitutions
from launch_ros.utilities import evaluate_parameters, normalize_parameters

from espnet_ros.transport import PROFILE_VARIABLES, profile_variables, shipped_profile

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "segment.launch.py"

try:
    get_package_share_directory("espnet_ros")
except PackageNotFoundError:
    pytest.skip("espnet_ros is not in the ament index (build it with colcon, or pip install . with "
                "AMENT_PREFIX_PATH containing the venv)", allow_module_level=True)


def _module() -> ModuleType:
    return load_python_launch_file_as_module(str(LAUNCH_FILE))


def _context(module: ModuleType, **arguments: str) -> LaunchContext:
    """A launch context with every declared argument set: its default, or the value given."""
    context = LaunchContext()
    for entity in module.generate_launch_description().entities:
        if isinstance(entity, DeclareLaunchArgument):
            default = perform_substitutions(context, entity.default_value or [])
            context.launch_configurations[entity.name] = arguments.get(entity.name, default)
    return context


def _evaluate(context: LaunchContext, parameters: dict[str, Any]) -> dict[str, Any]:
    (evaluated,) = evaluate_parameters(context, normalize_parameters([parameters]))
    assert isinstance(evaluated, dict)
    return evaluated


@pytest.mark.parametrize(("typed", "rate"), [("5", 5.0), ("5.0", 5.0), ("0.5", 0.5), ("12", 12.0)])
def test_play_rate_becomes_a_double_whatever_is_typed(typed: str, rate: float) -> None:
    module = _module()
    params = _evaluate(_context(module, play="/frames", play_rate=typed), module.player_parameters())
    assert params["rate"] == rate and isinstance(params["rate"], float)
    assert params["paths"] == "/frames"


@pytest.mark.parametrize(("typed", "value"), [("true", True), ("True", True), ("false", False), ("False", False)])
def test_use_sim_time_becomes_a_bool(typed: str, value: bool) -> None:
    module = _module()
    context = _context(module, use_sim_time=typed, play="/frames")
    assert _evaluate(context, module.node_parameters())["use_sim_time"] is value
    assert _evaluate(context, module.player_parameters())["use_sim_time"] is value


def test_string_arguments_stay_strings_even_when_they_look_like_numbers() -> None:
    module = _module()
    context = _context(module, preset="cityscapes", device="0", weights_dir="2024", play="2024")
    node = _evaluate(context, module.node_parameters())
    assert (node["device"], node["weights_dir"]) == ("0", "2024")
    assert _evaluate(context, module.player_parameters())["paths"] == "2024"
    assert _evaluate(_context(module), module.node_parameters())["cameras"] == ("image",)


def test_params_file_default_is_a_readable_path() -> None:
    (declared,) = [e for e in _module().generate_launch_description().entities
                   if isinstance(e, DeclareLaunchArgument) and e.name == "params_file"]
    default = perform_substitutions(LaunchContext(), declared.default_value or [])
    assert default == os.path.join(get_package_share_directory("espnet_ros"), "config", "segment.yaml")
    assert Path(default).is_file()


def _environment(description: LaunchDescription) -> dict[str, str]:
    context = LaunchContext()
    return {perform_substitutions(context, e.name): perform_substitutions(context, e.value)
            for e in description.entities if isinstance(e, SetEnvironmentVariable)}


def test_processes_get_the_fast_dds_profile_under_the_name_the_installed_fast_dds_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in PROFILE_VARIABLES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RCUTILS_COLORIZED_OUTPUT", raising=False)
    env = _environment(_module().generate_launch_description())
    for name in profile_variables():
        assert env[name] == str(shipped_profile())
    assert env["RCUTILS_COLORIZED_OUTPUT"] == "0"  # pytest's output is not a terminal


def test_variables_the_user_set_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mine = tmp_path / "my_profile.xml"
    for name in profile_variables():
        monkeypatch.setenv(name, str(mine))
    monkeypatch.setenv("RCUTILS_COLORIZED_OUTPUT", "1")
    assert _environment(_module().generate_launch_description()) == {}


def _rviz2_installed() -> bool:
    try:
        return (Path(get_package_prefix("rviz2")) / "lib" / "rviz2" / "rviz2").is_file()
    except PackageNotFoundError:
        return False


@pytest.mark.skipif(_rviz2_installed(), reason="rviz2 is installed here: the launch would start it")
def test_rviz_without_rviz2_fails_before_any_process_starts(caplog: pytest.LogCaptureFixture) -> None:
    started: list[Any] = []
    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessStart(on_start=lambda event, _: started.append(event.action.name))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                 launch_arguments={"rviz": "true", "play": "/nonexistent"}.items()),
    ]))
    assert service.run() != 0
    assert started == []
    assert "rviz:=true needs rviz2" in caplog.text and "Nothing was started" in caplog.text
