"""Training recipes: the scale passes of an epoch, the optimiser's settings, augmentation and class weighting.

Plain data (no torch), so that the command line can list the recipes without loading the training code.
:data:`RECIPES` holds ``upstream`` (Mehta et al., ECCV 2018, the upstream training code's settings) and ``quick``
(fine-tuning on a CPU); :mod:`espnet_ros.core.train` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["RECIPES", "Flip", "Recipe", "ScalePass", "Stage"]

Stage = Literal["encoder", "decoder"]
Flip = Literal["horizontal", "vertical", "none"]


@dataclass(frozen=True)
class ScalePass:
    """One pass over the training frames per epoch at ``(width_factor, height_factor)`` x the network size.

    ``crop_margin`` is the largest crop margin as a fraction of the pass's width (0: no crop); ``batch_delta`` is
    added to the batch size for this pass (upstream uses larger batches at the smaller scales). ``random_scales``
    (optional) multiplies both factors by a scale drawn per batch; ``crop_size`` (optional) then cuts a random
    ``(width, height)`` window out of every sample, so that a batch costs the same at every scale.
    """

    width_factor: float
    height_factor: float
    crop_margin: float
    batch_delta: int = 0
    random_scales: tuple[float, ...] = ()
    crop_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Recipe:
    """A training recipe: stages, scale passes, optimiser and schedule, augmentation and class weighting."""

    name: str
    stages: tuple[Stage, ...]
    passes: tuple[ScalePass, ...]
    epochs: int
    lr: float = 5e-4
    weight_decay: float = 5e-4
    lr_steps: int = 3
    lr_gamma: float = 0.5
    flip: Flip = "horizontal"
    weight_norm: float = 1.10
    batch_cpu: int = 6
    batch_cuda: int = 6
    encoder_batch_cuda: int = 12
    freeze: tuple[str, ...] = ()
    """Encoder modules (names under ``encoder.``) kept as initialised, batch-norm statistics included."""


RECIPES: dict[str, Recipe] = {
    "upstream": Recipe(
        name="upstream",
        stages=("encoder", "decoder"),
        # the upstream order: 1536x768, 1280x720, 512x256, 768x384, 1024x512 (factors of the network size)
        passes=(
            ScalePass(1.5, 1.5, 100 / 1536), ScalePass(1.25, 720 / 512, 100 / 1280),
            ScalePass(0.5, 0.5, 0.0, 4), ScalePass(0.75, 0.75, 32 / 768, 4), ScalePass(1.0, 1.0, 32 / 1024, 2),
        ),
        epochs=300,
    ),
    "quick": Recipe(
        name="quick",
        stages=("decoder",),
        passes=(ScalePass(1.0, 1.0, 32 / 1024, random_scales=(0.75, 1.0, 1.25), crop_size=(256, 192)),) * 2,
        epochs=20,
        lr=1e-3,
        batch_cpu=8,
        freeze=("level1", "sample1", "b1", "level2_0", "level2", "sample2", "b2", "level3_0", "level3", "b3"),
    ),
}
"""``upstream``: the full two-stage recipe. ``quick``: fine-tuning for a CPU: the full network only, with the
encoder kept as initialised except its classifier (so the backward pass runs through the decoder only), two passes
per epoch over 256x192 windows of the frames at 0.75, 1 and 1.25 x the network size (crop-resize and flip as
upstream), at twice upstream's learning rate (the last layer starts from class means of the initial model's)."""
