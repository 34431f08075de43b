"""The ROS packaging: package.xml against setup.py and the imports, the installed layout of a real pip install
(ament index marker, share files, lib/espnet_ros executables that run), and the shipped launch/config files."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

import espnet_ros
from espnet_ros.parameters import PARAMETERS, config_from_values
from espnet_ros.segmentation_node import GROUND_OUTPUTS, IMAGE_OUTPUTS, camera_topics

REPO = Path(__file__).resolve().parents[1]
PACKAGE_XML = ET.parse(REPO / "package.xml").getroot()
SETUP = (REPO / "setup.py").read_text()
EXECUTABLES = ("segmentation_node", "image_player", "segmentation_recorder")


def _setup_constant(name: str) -> object:
    for node in ast.parse(SETUP).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in setup.py")


def test_versions_agree() -> None:
    assert PACKAGE_XML.findtext("version") == _setup_constant("VERSION") == espnet_ros.__version__


def test_package_xml_is_format_3_with_licence_urls_and_build_type() -> None:
    assert PACKAGE_XML.get("format") == "3" and PACKAGE_XML.findtext("name") == "espnet_ros"
    assert PACKAGE_XML.findtext("license") == "MIT"
    assert PACKAGE_XML.find("maintainer").get("email")  # type: ignore[union-attr]
    urls = {u.get("type"): u.text for u in PACKAGE_XML.findall("url")}
    assert urls.get("website")
    # the upstream network's repository is where the weights come from, not this package's repository or tracker
    assert not any("sacmehta/ESPNet" in (url or "") for kind, url in urls.items() if kind != "website")
    assert PACKAGE_XML.findtext("export/build_type") == "ament_python"


def _imported_top_level(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_ros_package_imported_is_a_declared_dependency() -> None:
    declared = {e.text for e in PACKAGE_XML if e.tag.endswith("depend")}
    sources = [*REPO.glob("espnet_ros/*.py"), *REPO.glob("launch/*.py")]
    ros = {n for n in _imported_top_level(sources)
           if n.endswith(("_msgs", "_interfaces")) or n in ("rclpy", "launch", "launch_ros", "ament_index_python")}
    assert ros, "expected ROS imports"
    missing = ros - declared
    assert not missing, f"imported but not in package.xml: {missing}"
    assert {"vision_msgs", "python3-numpy", "python3-opencv", "python3-torch"} <= declared


def test_wrappers_and_console_scripts_match() -> None:
    assert _setup_constant("ROS_EXECUTABLES") == EXECUTABLES
    for exe in EXECUTABLES:
        script = REPO / "scripts" / exe
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert f"/bin/{exe}" in script.read_text()
        assert re.search(rf'"{exe} = espnet_ros\.\w+:main"', SETUP), exe


@pytest.fixture(scope="module")
def pip_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """espnet_ros installed by a real ``pip install`` (no deps) into an empty prefix, from a copy of the sources."""
    src = tmp_path_factory.mktemp("src") / "espnet_ros"
    skip = shutil.ignore_patterns(".git", ".venv", "venv", "build", "install", "log", "__pycache__", "*.egg-info",
                                  ".*_cache", ".devicework", "out", "demo_out", "*.onnx", "onnxruntime_profile*")
    shutil.copytree(REPO, src, ignore=skip)
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--ignore-installed", "--no-warn-script-location", "--prefix", str(prefix), str(src)],
                   check=True, capture_output=True, text=True)
    return prefix


def test_pip_install_lays_out_an_ament_package(pip_prefix: Path) -> None:
    assert (pip_prefix / "share/ament_index/resource_index/packages/espnet_ros").is_file()
    share = pip_prefix / "share/espnet_ros"
    for f in ("package.xml", "launch/segment.launch.py", "config/segment.yaml", "config/espnet_ros.rviz",
              "config/fastdds_shm.xml"):
        assert (share / f).is_file(), f
    for exe in EXECUTABLES:
        for folder in ("lib/espnet_ros", "bin"):
            assert os.access(pip_prefix / folder / exe, os.X_OK), f"{folder}/{exe}"
    env = dict(os.environ, AMENT_PREFIX_PATH=str(pip_prefix))
    code = "from ament_index_python.packages import get_package_prefix as p; print(p('espnet_ros'))"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()) == pip_prefix


def test_installed_executable_runs(pip_prefix: Path, ros_env: int) -> None:
    site = next(pip_prefix.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([str(pip_prefix / "lib/espnet_ros/segmentation_node"), "--ros-args", "-p", "preset:=x"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "preset='x' is not a known preset" in proc.stdout + proc.stderr


def test_segment_yaml_sets_only_declared_valid_parameters() -> None:
    doc = yaml.safe_load((REPO / "config/segment.yaml").read_text())
    params = doc["/**"]["ros__parameters"]
    declared = {p.name for p in PARAMETERS}
    assert set(params) <= declared
    assert not {"preset", "weights_dir", "device", "cameras"} & set(params)  # the launch arguments set those
    config_from_values(params)


def test_rviz_shows_overlay_colour_mask_and_drivable_overlay() -> None:
    doc = yaml.safe_load((REPO / "config/espnet_ros.rviz").read_text())
    displays = doc["Visualization Manager"]["Displays"]
    topics = [d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"]
    layout = camera_topics("/image")
    assert topics == [layout.output(o) for o in ("overlay", "color_mask", "drivable_overlay")]
    assert set(o for o in ("overlay", "color_mask", "drivable_overlay")) <= set(IMAGE_OUTPUTS)
    # the ground outputs in the 3-D view, whose fixed frame is the default grid_frame (no TF needed)
    ground = {d["Class"]: d["Topic"]["Value"] for d in displays if d["Class"] != "rviz_default_plugins/Image"}
    assert ground == {"rviz_default_plugins/Map": layout.output("drivable_grid"),
                      "rviz_default_plugins/PointCloud2": layout.output("obstacle_points")}
    assert set(o for o in ("drivable_grid", "obstacle_points")) <= set(GROUND_OUTPUTS)
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == config_from_values({}).grid_frame


def test_fastdds_profile_has_a_shared_memory_segment_for_camera_images() -> None:
    root = ET.parse(REPO / "config/fastdds_shm.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", namespaces=ns) == "SHM"]
    assert len(shm) == 1
    assert int(shm[0].findtext("d:segment_size", namespaces=ns) or 0) >= 4 * 2048 * 1024 * 3
    participant = root.find(".//d:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"


def test_launch_file_is_declarative() -> None:
    text = (REPO / "launch/segment.launch.py").read_text()
    compile(text, "segment.launch.py", "exec")
    for arg in ("image", "cameras", "namespace", "preset", "weights_dir", "device", "params_file", "use_sim_time",
                "rviz", "log_level"):
        assert f'DeclareLaunchArgument("{arg}"' in text, arg
    assert "PythonExpression" not in text and "subprocess" not in text
    assert text.count("OpaqueFunction(") == 1 and "OpaqueFunction(function=_check_rviz)" in text  # the rviz2 check
