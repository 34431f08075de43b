#!/usr/bin/env bash
# The whole GPU measurement in one go, for a lent GPU machine (python3 there has torch with CUDA, numpy, OpenCV).
# Prepare here first:  bash tools/gpu_check.sh --prepare   (copies weights, sample frames and CamVid val into the
# git-ignored .devicework/), then run this script there with .devicework carried; results land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
work=.devicework
if [ "${1:-}" = "--prepare" ]; then
  shared=${ESPNET_ROS_SHARED:-../shared}
  rm -rf "$work" && mkdir -p "$work"
  cp -r "$shared/espnet/weights" "$shared/espnet/samples" "$work/"
  mkdir -p "$work/camvid" && cp -r "$shared/camvid/val/." "$work/camvid/"
  du -sh "$work"
  exit 0
fi
out=${OUT:-out}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# each step runs even if an earlier one failed; the status of each is in $out/gpu.txt
step() {
  local name=$1; shift
  local t0=$SECONDS rc=0
  "$@" >"$out/$name.txt" 2>&1 || rc=$?
  echo "step $name: rc=$rc, $((SECONDS - t0)) s" | tee -a "$out/gpu.txt"
  tail -n 25 "$out/$name.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cv2', cv2.__version__)" \
  | tee -a "$out/gpu.txt"
step bench_cuda_cityscapes python3 -m espnet_ros.bench.cuda --preset cityscapes --weights-dir "$work/weights" \
  --images "$work/samples" --json "$out/bench_cuda_cityscapes.json"
step bench_cuda_cityscapes_fp32 python3 -m espnet_ros.bench.cuda --preset cityscapes --precision float32 \
  --weights-dir "$work/weights" --images "$work/samples" --json "$out/bench_cuda_cityscapes_fp32.json"
step bench_cuda_camvid python3 -m espnet_ros.bench.cuda --preset camvid --weights-dir "$work/weights" \
  --images "$work/camvid/images" --camvid "$work/camvid" --repeats 100 --json "$out/bench_cuda_camvid.json"
step pytest_gpu env ESPNET_ROS_WEIGHTS_DIR=$work/weights ESPNET_ROS_SAMPLES_DIR=$work/samples \
  python3 -m pytest -q -p no:cacheprovider test/test_gpu.py
