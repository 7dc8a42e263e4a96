"""RandAugment (Cubuk et al. 2020) over PIL images, configured by timm's string (`rand-m9-mstd0.5-inc1`, DeiT's).

Written here because the maintained implementations do not fit: timm needs torchvision, and kornia's RandAugment
(kornia 0.9) draws from torch's global generator on batches, has no magnitude noise (`mstd`) and no "increasing"
operation set, so it is not DeiT's recipe. The operations and their magnitude scales follow the published
definitions as timm parameterises them (magnitude m on a 0..10 scale, `_LEVEL_DENOM` = 10):

| operation | at magnitude m | identity at m = 0 |
|---|---|---|
| Rotate | +-30 * m/10 degrees | yes |
| ShearX / ShearY | +-0.3 * m/10 | yes |
| TranslateXRel / TranslateYRel | +-0.45 * m/10 of the image side | yes |
| Color / Contrast / Brightness / Sharpness (increasing) | enhance by 1 +- 0.9 * m/10 | yes |
| SolarizeIncreasing | invert pixels >= 256 - 256 * m/10 | yes |
| SolarizeAdd | add 110 * m/10 to pixels < 128 | yes |
| PosterizeIncreasing | keep 4 - int(4 * m/10) bits | no (keeps 4 bits) |
| AutoContrast, Equalize, Invert | no magnitude | no |

The standard set (`inc0`, timm's default) has Posterize (keep int(4 * m/10) bits), Solarize (invert pixels >=
256 * m/10) and enhance factors 1.8 * m/10 + 0.1 in place of the increasing variants.
Every draw comes from the generator the caller passes (the example's own, `data/randomness.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..errors import UsageError

LEVEL_DENOM = 10.0  # timm's magnitude scale: m = 10 is the "full" strength of every operation
INCREASING_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)
STANDARD_OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
_ENHANCERS = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast, "Brightness": ImageEnhance.Brightness,
              "Sharpness": ImageEnhance.Sharpness}


def _signed(value: float, rng: np.random.Generator) -> float:
    """The value with a random sign (geometric operations and increasing enhancements go either way)."""
    return -value if rng.random() < 0.5 else value


def apply_operation(image: Image.Image, name: str, magnitude: float, rng: np.random.Generator,
                    fill: tuple[int, ...] = (128, 128, 128),
                    resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """One RandAugment operation at `magnitude` (0..10 scale) on an RGB image."""
    level = magnitude / LEVEL_DENOM
    affine = dict(resample=resample, fillcolor=fill)
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    if name == "Rotate":
        return image.rotate(_signed(30.0 * level, rng), **affine)
    if name in ("ShearX", "ShearY"):
        shear = _signed(0.3 * level, rng)
        matrix = (1, shear, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, shear, 1, 0)
        return image.transform(image.size, Image.Transform.AFFINE, matrix, **affine)
    if name in ("TranslateXRel", "TranslateYRel"):
        fraction = _signed(0.45 * level, rng)
        matrix = ((1, 0, fraction * image.size[0], 0, 1, 0) if name == "TranslateXRel"
                  else (1, 0, 0, 0, 1, fraction * image.size[1]))
        return image.transform(image.size, Image.Transform.AFFINE, matrix, **affine)
    if name in ("Posterize", "PosterizeIncreasing"):
        bits = int(4 * level) if name == "Posterize" else 4 - int(4 * level)
        return image if bits >= 8 else ImageOps.posterize(image, max(bits, 0))
    if name in ("Solarize", "SolarizeIncreasing"):
        threshold = 256 - int(256 * level) if name == "SolarizeIncreasing" else int(256 * level)
        return ImageOps.solarize(image, threshold)
    if name == "SolarizeAdd":
        add = int(110 * level)
        pixels = np.asarray(image, dtype=np.int16)
        pixels = np.where(pixels < 128, np.minimum(pixels + add, 255), pixels).astype(np.uint8)
        return Image.fromarray(pixels, mode=image.mode)
    base = name.removesuffix("Increasing")
    if base in _ENHANCERS:
        factor = 1.0 + _signed(0.9 * level, rng) if name.endswith("Increasing") else 1.8 * level + 0.1
        return _ENHANCERS[base](image).enhance(factor)
    raise ValueError(f"Unknown RandAugment operation {name!r}; known: {', '.join(INCREASING_OPS + STANDARD_OPS)}.")


@dataclass
class RandAugment:
    """`num_ops` operations drawn with replacement, each applied with probability `prob` at a magnitude drawn around
    `magnitude` (Gaussian, std `magnitude_std`; uniform in [0, magnitude] when the std is infinite), clipped to
    [0, magnitude_max]: timm's RandAugment."""

    magnitude: float = 9.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    prob: float = 0.5
    increasing: bool = False
    fill: tuple[int, ...] = (128, 128, 128)
    ops: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        self.ops = INCREASING_OPS if self.increasing else STANDARD_OPS

    def draw_magnitude(self, rng: np.random.Generator) -> float:
        if self.magnitude_std == float("inf"):
            magnitude = rng.uniform(0.0, self.magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.normal(self.magnitude, self.magnitude_std)
        else:
            magnitude = self.magnitude
        return float(np.clip(magnitude, 0.0, self.magnitude_max))

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for index in rng.integers(0, len(self.ops), size=self.num_ops):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            image = apply_operation(image, self.ops[int(index)], self.draw_magnitude(rng), rng, fill=self.fill)
        return image


def parse_rand_augment(spec: str, fill: tuple[int, ...] = (128, 128, 128)) -> RandAugment:
    """timm's config string -> RandAugment: `rand` then `-`-separated keys m (magnitude), n (ops), mstd (magnitude
    std, `inf` for uniform), mmax (magnitude ceiling), p (probability of each op), inc (1: increasing ops)."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise UsageError(f"--aa {spec!r}: only RandAugment strings are supported, e.g. rand-m9-mstd0.5-inc1 (DeiT's).")
    keys = {"mstd": "magnitude_std", "mmax": "magnitude_max", "inc": "increasing", "m": "magnitude", "n": "num_ops",
            "p": "prob"}
    values = {}
    for part in parts[1:]:
        key = next((k for k in keys if part.startswith(k)), None)  # longest keys first: mstd before m
        try:
            if key is None:
                raise ValueError(part)
            value = float(part[len(key):])
        except ValueError:
            raise UsageError(f"--aa {spec!r}: cannot read {part!r}; keys are m (magnitude), n (ops), mstd, mmax, p, "
                             "inc, e.g. rand-m9-mstd0.5-inc1.") from None
        values[keys[key]] = value
    if "num_ops" in values:
        values["num_ops"] = int(values["num_ops"])
    if "increasing" in values:
        values["increasing"] = bool(values["increasing"])
    augment = RandAugment(fill=fill, **values)
    if augment.num_ops < 0 or not 0 <= augment.prob <= 1 or augment.magnitude < 0 or augment.magnitude_std < 0:
        raise UsageError(f"--aa {spec!r}: n must be >= 0, p in [0, 1], m and mstd >= 0.")
    return augment
