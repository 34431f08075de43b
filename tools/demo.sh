#!/usr/bin/env bash
# Set everything up and run the demo end to end: image_player publishes the two Cityscapes sample frames, the
# segmentation node segments them, segmentation_recorder writes the outputs it receives (overlay, drivable overlay,
# colour mask, class mask) to demo_out/ and logs the latency from each image's stamp to receipt.
#   bash tools/demo.sh [FRAMES]        (FRAMES: how many frames to record, default 6)
# Environment: ESPNET_ROS_WEIGHTS_DIR / ESPNET_ROS_SAMPLES_DIR (default ../shared/espnet/...), PRESET (cityscapes),
# DEVICE (auto), RATE (player Hz, 2), OUT (demo_out).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_venv.sh
VENV=${ESPNET_ROS_VENV:-.venv}
PY="$VENV/bin/python"
FRAMES=${1:-6}
OUT=${OUT:-demo_out}
export ESPNET_ROS_WEIGHTS_DIR=$(realpath "${ESPNET_ROS_WEIGHTS_DIR:-../shared/espnet/weights}")
SAMPLES=$(realpath "${ESPNET_ROS_SAMPLES_DIR:-../shared/espnet/samples}")
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
# Camera-sized images between processes: a 32 MiB shared-memory segment (see config/fastdds_shm.xml).
export FASTDDS_DEFAULT_PROFILES_FILE=$PWD/config/fastdds_shm.xml
rm -rf "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$PY" -m espnet_ros.segmentation_node --ros-args -r __ns:=/demo -p preset:="${PRESET:-cityscapes}" \
  -p device:="${DEVICE:-auto}" -p input_qos:=reliable &
pids+=($!)
"$PY" -m espnet_ros.image_player "$SAMPLES" --ros-args -r __ns:=/demo -p rate:="${RATE:-2.0}" -p qos:=reliable &
pids+=($!)
"$PY" -m espnet_ros.recorder --output-dir "$OUT" --count "$FRAMES" --ros-args -r __ns:=/demo
echo "== demo done: $(ls "$OUT" | wc -l) files in $OUT/"
