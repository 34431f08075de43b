#!/usr/bin/env bash
# Create (or update) the project's virtual environment with everything espnet_ros needs, from PyPI only:
# ROS 2 Kilted wheels (rclpy + message packages, no ROS installation needed), torch 2.13.0 (CPU), OpenCV, numpy,
# the test tools and colcon; then install espnet_ros itself (editable). Sourced by tools/test.sh and tools/demo.sh;
# run it alone to just set up:  bash tools/setup_venv.sh   (venv path: $ESPNET_ROS_VENV, default .venv)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${ESPNET_ROS_VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --quiet --disable-pip-version-check)  # errors only
echo "== installing dependencies into $VENV"
# torch pinned: an unpinned torch would pull a multi-GB CUDA build; 2.13.0 CPU is what the project is tested with.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" "ros-rclpy[fastrtps]" ros-sensor-msgs ros-std-msgs ros-diagnostic-msgs ros-nav-msgs \
  ros-geometry-msgs ros-visualization-msgs ros-std-srvs ros-ament-index-python
"${PIP[@]}" numpy opencv-python-headless tqdm pyyaml pytest mypy ruff colcon-common-extensions setuptools
# optional CPU backend (espnet_ros.core.accel "onnxruntime"), installed so its tests run
"${PIP[@]}" onnx onnxruntime
"${PIP[@]}" --no-deps --no-build-isolation -e .
echo "== $VENV ready: $("$VENV/bin/python" -c 'import rclpy, torch, cv2, numpy; print("rclpy ok, torch", torch.__version__, "opencv", cv2.__version__, "numpy", numpy.__version__)')"
