"""Random erasing (Zhong et al. 2020) as DeiT trains with it (`--reprob 0.25`): one rectangle of a normalised image
replaced by per-pixel values drawn from N(0, 1) (timm's "pixel" mode), drawn from the example's own generator.

The rectangle covers a fraction of the image area drawn uniformly from [0.02, 1/3], with an aspect ratio drawn
log-uniformly from [0.3, 1/0.3]; up to 10 tries find one that fits, otherwise the image is left as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class RandomErasing:
    probability: float = 0.25
    area: tuple[float, float] = (0.02, 1 / 3)
    aspect: tuple[float, float] = (0.3, 1 / 0.3)
    attempts: int = 10

    def box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
        """(top, left, box height, box width) of the rectangle to erase, or None to leave the image as it is."""
        if rng.random() >= self.probability:
            return None
        log_aspect = (math.log(self.aspect[0]), math.log(self.aspect[1]))
        for _ in range(self.attempts):
            target_area = height * width * rng.uniform(*self.area)
            aspect = math.exp(rng.uniform(*log_aspect))
            box_h = int(round(math.sqrt(target_area * aspect)))
            box_w = int(round(math.sqrt(target_area / aspect)))
            if 0 < box_h < height and 0 < box_w < width:
                return int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1)), box_h, box_w
        return None

    def __call__(self, pixel_values: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(C, H, W) normalised image -> the same with one rectangle of N(0, 1) noise (a new tensor when erased)."""
        channels, height, width = pixel_values.shape
        box = self.box(height, width, rng)
        if box is None:
            return pixel_values
        top, left, box_h, box_w = box
        noise = torch.from_numpy(rng.standard_normal((channels, box_h, box_w)).astype(np.float32))
        erased = pixel_values.clone()
        erased[:, top:top + box_h, left:left + box_w] = noise.to(pixel_values.dtype)
        return erased
