#!/usr/bin/env bash
# Set everything up and run the demo end to end: image_player publishes the two Cityscapes sample frames, the
# segmentation node segments them, segmentation_recorder writes the outputs it receives (overlay, drivable overlay,
# colour mask, class mask) to demo_out/ and logs the latency from each image's stamp to receipt.
#   bash tools/demo.sh [FRAMES] [INPUT...]   (FRAMES: how many frames to record, default 6; INPUT: images, folders
#                                             or videos to play instead of the sample frames)
# Weights and sample frames: $ESPNET_ROS_WEIGHTS_DIR / $ESPNET_ROS_SAMPLES_DIR if set, else ../shared/espnet/... where
# that exists (a development checkout), else ~/.cache/espnet_ros/..., where `espnet-ros download-weights --samples`
# fetches them first (verified by sha256; skipped when already there).
# Environment: PRESET (cityscapes), DEVICE (auto), RATE (player Hz, 2), OUT (demo_out).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_venv.sh
PY="$VENV/bin/python"
FRAMES=${1:-6}
shift $(( $# > 0 ? 1 : 0 ))
OUT=${OUT:-demo_out}
PRESET=${PRESET:-cityscapes}
if [ -z "${ESPNET_ROS_WEIGHTS_DIR:-}" ] && [ -d ../shared/espnet/weights ]; then
  ESPNET_ROS_WEIGHTS_DIR=../shared/espnet/weights
fi
if [ -z "${ESPNET_ROS_SAMPLES_DIR:-}" ] && [ -d ../shared/espnet/samples ]; then
  ESPNET_ROS_SAMPLES_DIR=../shared/espnet/samples
fi
export ESPNET_ROS_WEIGHTS_DIR=$(realpath -m "${ESPNET_ROS_WEIGHTS_DIR:-$HOME/.cache/espnet_ros/weights}")
export ESPNET_ROS_SAMPLES_DIR=$(realpath -m "${ESPNET_ROS_SAMPLES_DIR:-$HOME/.cache/espnet_ros/samples}")
if [ $# -gt 0 ]; then
  INPUT=("$@")
  "$VENV/bin/espnet-ros" download-weights "$PRESET"
else
  INPUT=("$ESPNET_ROS_SAMPLES_DIR")
  "$VENV/bin/espnet-ros" download-weights "$PRESET" --samples
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$((RANDOM % 100 + 1))}
# Camera-sized images between processes: config/fastdds_shm.xml (a 32 MiB shared-memory segment) under the name the
# installed Fast DDS reads (espnet_ros.transport; nothing is changed where it is already set).
eval "$("$PY" -m espnet_ros.transport)"
rm -rf "$OUT"
pids=()
# Stop like Ctrl-C; a process still running 20 s later is killed and reported (Fast DDS 2.14 can hang in
# rmw_destroy_node, deaf to SIGINT and SIGTERM).
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "== process $p did not exit within 20 s of SIGINT; killed (SIGKILL)" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT
"$PY" -m espnet_ros.segmentation_node --ros-args -r __ns:=/demo -p preset:="$PRESET" \
  -p device:="${DEVICE:-auto}" -p input_qos:=reliable &
pids+=($!)
"$PY" -m espnet_ros.image_player "${INPUT[@]}" --ros-args -r __ns:=/demo -p rate:="${RATE:-2.0}" -p qos:=reliable &
pids+=($!)
"$PY" -m espnet_ros.recorder --output-dir "$OUT" --count "$FRAMES" --ros-args -r __ns:=/demo
echo "== demo done: $(ls "$OUT" | wc -l) files in $OUT/"
