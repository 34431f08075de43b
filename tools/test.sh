#!/usr/bin/env bash
# Set everything up and run every check: the venv (tools/setup_venv.sh), ruff, mypy and the whole pytest suite
# (real rclpy nodes on a random ROS domain, localhost discovery only; real weights from ../shared or
# $ESPNET_ROS_WEIGHTS_DIR). ROS 2 distribution: $ESPNET_ROS_DISTRO (jazzy, the default, or kilted; see
# tools/setup_venv.sh). Extra arguments go to pytest, e.g.  bash tools/test.sh -k node -x
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_venv.sh
export ESPNET_ROS_WEIGHTS_DIR=$(realpath "${ESPNET_ROS_WEIGHTS_DIR:-../shared/espnet/weights}")
export ESPNET_ROS_SAMPLES_DIR=$(realpath "${ESPNET_ROS_SAMPLES_DIR:-../shared/espnet/samples}")
# compiled CPU artifacts of the tests stay in the checkout (git-ignored), not in the user's cache
export ESPNET_ROS_CACHE_DIR=$(realpath -m "${ESPNET_ROS_CACHE_DIR:-.cache/compiled}")
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
echo "== ruff"
"$VENV/bin/ruff" check espnet_ros test launch
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
"$VENV/bin/python" -m pytest -q "$@"
