"""The ``espnet-ros train`` and ``espnet-ros export`` subcommands (registered by :mod:`espnet_ros.cli`).

``train`` turns labelled frames into a model file with :func:`espnet_ros.core.train.train`: a progress bar per epoch
with the running loss and one table row per epoch (validation mIoU under the standard protocol, best so far, time).
``export`` writes a model file or preset as ONNX with :func:`espnet_ros.core.export.export_onnx` and checks it
against PyTorch on a sample frame. Domain errors reach :func:`espnet_ros.cli.main`, which prints them as one line.
No ROS.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["add_export_parser", "add_train_parser", "cmd_export", "cmd_train"]


def add_train_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to the ``espnet-ros`` subparsers."""
    from espnet_ros.core.recipes import RECIPES

    tr = sub.add_parser(
        "train", help="train ESPNet on labelled frames into a model file (docs/training.md)",
        description="Train ESPNet on your own labelled frames. Images and label maps pair up by file name; label maps "
                    "are class-id PNGs, colour PNGs in the class file's palette, or labelme JSON. Writes OUT/best "
                    "(the model file with the best validation mIoU), OUT/last, OUT/checkpoint.pt (for --resume) and "
                    "OUT/history.json.")
    tr.add_argument("--images", required=True, metavar="DIR", help="training images")
    tr.add_argument("--labels", required=True, metavar="DIR", help="training label maps (same file names)")
    tr.add_argument("--val-images", metavar="DIR", default=None, help="validation images")
    tr.add_argument("--val-labels", metavar="DIR", default=None, help="validation label maps")
    tr.add_argument("--classes", required=True, metavar="FILE",
                    help="class file (YAML; example: config/camvid_classes.yaml)")
    tr.add_argument("--init", metavar="PRESET_OR_MODEL", default=None,
                    help="start from a preset (e.g. cityscapes) or a model folder; default: from scratch")
    tr.add_argument("--out", required=True, metavar="DIR", help="output folder")
    tr.add_argument("--recipe", choices=tuple(RECIPES), default="upstream",
                    help="upstream: encoder then full network, five scales per epoch (default); quick: the full "
                         "network at the network size only, for fine-tuning")
    tr.add_argument("--epochs", type=int, default=None, help="epochs per stage (default: the recipe's; upstream 300)")
    tr.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes in all")
    tr.add_argument("--lr", type=float, default=None,
                    help="initial learning rate (default: the recipe's; upstream 5e-4, quick 1e-3)")
    tr.add_argument("--batch-size", type=int, default=None, help="batch size (default 6; the encoder stage on CUDA 12)")
    tr.add_argument("--size", metavar="WxH", default=None,
                    help="network input size, multiples of 8 (default: the frames' size, at most 1024 wide)")
    tr.add_argument("--flip", choices=("horizontal", "vertical", "none"), default=None,
                    help="random flip (default horizontal; upstream's code flips vertically)")
    tr.add_argument("--void", choices=("learn", "ignore"), default="learn",
                    help="learn the void class like the others (upstream, default) or leave its pixels out")
    tr.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--name", default=None, help="model name (default: <class file name>-espnet-p2q8)")
    tr.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    tr.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    tr.add_argument("--weights-dir", metavar="DIR", default=None,
                    help="folder of the preset weights for --init (default: $ESPNET_ROS_WEIGHTS_DIR or the user cache)")
    tr.set_defaults(func=cmd_train)
    return tr  # type: ignore[no-any-return]


def _size(text: str | None) -> tuple[int, int] | None:
    from espnet_ros.core.train import TrainError

    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TrainError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 480x360") from None
    return w, h


class _Progress:
    """Progress bar per epoch and the per-epoch table on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.header = False

    def epoch_start(self, stage: str, epoch: int, batches: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=batches, desc=f"{stage} epoch {epoch}", unit="batch", disable=self.quiet,
                        file=sys.stderr, dynamic_ncols=True, leave=False)

    def batch_end(self, loss: float, logits: Any, target: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update(1)

    def epoch_end(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
        if not self.header:
            print(f"{'stage':<8} {'epoch':>5} {'lr':>9} {'loss':>8} {'val mIoU':>8} {'best':>6} {'s/epoch':>8} "
                  f"{'minutes':>7}", flush=True)
            self.header = True

        def pct(v: float) -> str:
            return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.2f}"

        print(f"{row['stage']:<8} {row['epoch']:>5} {row['lr']:>9.2e} {row['loss']:>8.4f} {pct(row['val_miou']):>8} "
              f"{pct(row['best_miou']):>6} {row['seconds']:>8.1f} {row['minutes']:>7.2f}", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    """Run ``espnet-ros train``."""
    from espnet_ros.core.classes import load_class_file
    from espnet_ros.core.recipes import RECIPES
    from espnet_ros.core.train import TrainConfig, train

    recipe = RECIPES[args.recipe]
    if args.flip is not None:
        recipe = replace(recipe, flip=args.flip)
    if args.lr is not None:
        if not (math.isfinite(args.lr) and args.lr > 0):
            from espnet_ros.core.train import TrainError

            raise TrainError(f"--lr {args.lr}: give a positive learning rate, e.g. 5e-4")
        recipe = replace(recipe, lr=args.lr)

    def path(v: str | None) -> Path | None:
        return None if v is None else Path(v).expanduser()

    cfg = TrainConfig(
        images=Path(args.images).expanduser(), labels=Path(args.labels).expanduser(),
        classes=load_class_file(args.classes), out=Path(args.out).expanduser(),
        val_images=path(args.val_images), val_labels=path(args.val_labels), init=args.init, recipe=recipe,
        epochs=args.epochs, max_minutes=args.max_minutes, batch_size=args.batch_size, network_size=_size(args.size),
        device=args.device, seed=args.seed, resume=args.resume, void=args.void, num_threads=args.threads,
        name=args.name, weights_dir=path(args.weights_dir),
    )
    result = train(cfg, _Progress(args.quiet))
    best = "n/a (no validation split)" if math.isnan(result.best_miou) else f"{result.best_miou:.2f}"
    print(f"best model: {result.best} (validation mIoU {best}, standard protocol); stopped by {result.stopped_by}; "
          f"run it with --model {result.best} or model:={result.best}", flush=True)
    return 0


def add_export_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to the ``espnet-ros`` subparsers."""
    ex = sub.add_parser(
        "export", help="export a model file or preset to ONNX, checked against PyTorch",
        description="Write the network as ONNX (input: preprocessed (N, 3, H, W) float32 BGR; output: logits), or "
                    "with --with-preprocessing a graph from (N, H, W, 3) uint8 BGR frames at the network size, and "
                    "with --argmax (N, H, W) uint8 class ids. The export is run in ONNX Runtime on a sample frame and "
                    "compared with PyTorch.")
    src = ex.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="DIR", default=None, help="model folder (from espnet-ros train)")
    src.add_argument("--preset", default=None, help="weights preset")
    ex.add_argument("--onnx", required=True, metavar="FILE", help="output .onnx file")
    ex.add_argument("--with-preprocessing", action="store_true",
                    help="put the preprocessing (uint8 BGR in, mean / std, /255) in the graph")
    ex.add_argument("--argmax", action="store_true", help="put the argmax in the graph (uint8 class ids out)")
    ex.add_argument("--size", metavar="WxH", default=None, help="input size (default: the model's native size)")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ex.add_argument("--check-image", metavar="FILE", default=None,
                    help="frame to compare ONNX Runtime with PyTorch on (default: a synthetic street-like frame)")
    ex.add_argument("--weights-dir", metavar="DIR", default=None, help="weights folder for --preset")
    ex.set_defaults(func=cmd_export)
    return ex  # type: ignore[no-any-return]


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``espnet-ros export``."""
    from espnet_ros.core.export import ExportError, check_onnx, export_onnx
    from espnet_ros.core.modelfile import resolve_preset

    preset = resolve_preset(args.preset, args.model)
    out = Path(args.onnx).expanduser()
    size = _size(args.size)
    export_onnx(preset, out, network_size=size, with_preprocessing=args.with_preprocessing, argmax=args.argmax,
                opset=args.opset, weights_dir=args.weights_dir)
    check = check_onnx(preset, out, network_size=size, image=None if args.check_image is None else
                       Path(args.check_image).expanduser(), weights_dir=args.weights_dir)
    if check.agreement < 0.999:
        raise ExportError(f"{out}: ONNX Runtime's labels agree with PyTorch's on only {check.agreement * 100:.2f} % "
                          "of the pixels (expected >= 99.9 %); try another --opset or report it")
    print(f"wrote {out} ({preset.name}, input {check.input_desc}); ONNX Runtime agrees with PyTorch on "
          f"{check.agreement * 100:.3f} % of the sample frame's pixels (max |logit difference| "
          f"{check.max_abs_diff:.2e})", flush=True)
    return 0
