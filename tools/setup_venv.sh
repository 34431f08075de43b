#!/usr/bin/env bash
# Create (or update) the project's virtual environment with everything espnet_ros needs, from PyPI only:
# the ROS 2 wheels of one distribution (rclpy + message packages, no ROS installation needed), torch 2.13.0 (CPU),
# OpenCV, numpy, rosbags, the test tools and colcon; then install espnet_ros itself (editable). Sourced by
# tools/test.sh and tools/demo.sh; run it alone to just set up:  bash tools/setup_venv.sh
#   ESPNET_ROS_DISTRO  jazzy (default; LTS, rclpy 7.1, Fast DDS 2.14) or kilted (rclpy 9.1, Fast DDS 3)
#   ESPNET_ROS_VENV    the venv's path; default .venv for jazzy, .venv-kilted for kilted (one distro per venv:
#                      the wheels of two distributions pin different versions of the same packages)
#   PYTHON             the interpreter that creates the venv (default python3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DISTRO=${ESPNET_ROS_DISTRO:-jazzy}
case "$DISTRO" in
  jazzy) RCLPY_SERIES=7.1 DEFAULT_VENV=.venv ;;
  kilted) RCLPY_SERIES=9.1 DEFAULT_VENV=.venv-kilted ;;
  *) echo "setup_venv.sh: ESPNET_ROS_DISTRO=$DISTRO is not one of: jazzy, kilted" >&2; exit 2 ;;
esac
VENV=${ESPNET_ROS_VENV:-$DEFAULT_VENV}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PYTHON --version) for ROS 2 $DISTRO"
  "$PYTHON" -m venv "$VENV"
fi
have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))' 2>/dev/null || true)
if [ -n "$have" ] && [ "${have%.*}" != "$RCLPY_SERIES" ]; then
  echo "setup_venv.sh: $VENV holds rclpy $have, not ROS 2 $DISTRO's rclpy $RCLPY_SERIES. One distribution per venv:" \
    "remove $VENV, or choose another path with ESPNET_ROS_VENV, or set ESPNET_ROS_DISTRO to match." >&2
  exit 2
fi
PIP=("$VENV/bin/python" -m pip install --quiet --quiet --disable-pip-version-check)  # errors only
echo "== installing dependencies into $VENV (ROS 2 $DISTRO)"
# torch pinned: an unpinned torch would pull a multi-GB CUDA build; 2.13.0 CPU is what the project is tested with.
"${PIP[@]}" "torch==2.13.0"
ros=(sensor-msgs std-msgs diagnostic-msgs nav-msgs geometry-msgs visualization-msgs std-srvs
     ament-index-python)
"${PIP[@]}" "ros-$DISTRO-rclpy[fastrtps]" "${ros[@]/#/ros-$DISTRO-}"
"${PIP[@]}" numpy opencv-python-headless tqdm pyyaml rosbags pytest mypy ruff colcon-common-extensions setuptools
# ONNX export (espnet-ros export) and its check against ONNX Runtime, installed so their tests run
"${PIP[@]}" onnx onnxruntime
"${PIP[@]}" --no-deps --no-build-isolation -e .
echo "== $VENV ready: $("$VENV/bin/python" -c 'import rclpy, torch, cv2, numpy, importlib.metadata as m; print("ROS 2", "'"$DISTRO"'", "rclpy", m.version("ros-rclpy"), "torch", torch.__version__, "opencv", cv2.__version__, "numpy", numpy.__version__)')"
