"""An offline dataset with exact object masks, for trying the localisation analysis: "masked-digits".

Each image is one handwritten digit (scikit-learn's real 8x8 digits, the set the default model trains on)
drawn as dark ink at a random size and place on a textured background (gratings, blotchy noise,
checkerboards) with a few dark distractor strokes, so that "darkest pixels" alone does not find the digit.
The mask is exactly where the digit's ink was drawn (opacity >= 0.5), so no annotation is approximate.
Everything is derived from one seed.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MASKED_DIGITS = "masked-digits"


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB texture (size, size, 3) in [0.35, 1]: busy enough to compete with the digit, lighter than its ink."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    kind = rng.integers(3)
    if kind == 0:  # sinusoidal grating at a random angle and frequency
        angle, cycles = rng.uniform(0, np.pi), rng.uniform(2, 6)
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * (xs * np.cos(angle) + ys * np.sin(angle)) + rng.uniform(0, 6.3))
    elif kind == 1:  # blotchy noise: a coarse random field, upsampled smoothly
        coarse = rng.uniform(0, 1, (4, 4))
        pattern = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    else:  # checkerboard with a random cell size and offset
        cell = rng.integers(3, max(4, size // 4) + 1)
        offset = rng.integers(0, cell, 2)
        pattern = (((np.arange(size)[:, None] + offset[0]) // cell + (np.arange(size)[None] + offset[1]) // cell) % 2)
        pattern = pattern.astype(float)
    low, high = rng.uniform(0.35, 0.6), rng.uniform(0.8, 1.0)
    tint = rng.uniform(0.85, 1.0, 3)  # a pale colour cast, different per image
    return (low + (high - low) * pattern)[..., None] * tint


def _distractors(rng: np.random.Generator, size: int, count: int) -> np.ndarray:
    """Opacity (size, size) of `count` short straight strokes, as thick as the digit's, anywhere in the image."""
    from PIL import ImageDraw

    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(count):
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.3) * size
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        draw.line([(x0, y0), (x1, y1)], fill=int(rng.uniform(0.6, 0.9) * 255), width=max(1, size // 16))
    return np.asarray(layer) / 255


def masked_digits_arrays(num_images: int = 256, image_size: int = 32, seed: int = 0, distractors: int = 2,
                         clutter: bool = True):
    """(images uint8 (N, S, S, 3), masks bool (N, S, S), labels int (N,)) as numpy arrays.

    distractors: dark strokes per image that are not part of the object (0 gives plain textured backgrounds).
    clutter: False draws the same digits (same sizes, places and ink) on a plain light background with no strokes:
    the clean first stage of a curriculum, from the same seed.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, image_size, image_size, 3), dtype=np.uint8)
    masks = np.zeros((num_images, image_size, image_size), dtype=bool)
    labels = np.empty(num_images, dtype=np.int64)
    for i in range(num_images):
        index = rng.integers(len(digits.images))
        labels[i] = digits.target[index]
        # The digit covers 45-75% of the side, so there is background on every side of most objects.
        side = int(rng.integers(int(0.45 * image_size), int(0.75 * image_size) + 1))
        ink = Image.fromarray((digits.images[index] / 16 * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR)
        top, left = rng.integers(0, image_size - side + 1, 2)
        opacity = np.zeros((image_size, image_size))
        opacity[top : top + side, left : left + side] = np.asarray(ink) / 255
        ink_colour = rng.uniform(0.0, 0.25, 3)
        canvas = _texture(rng, image_size)
        strokes = _distractors(rng, image_size, distractors)[..., None]
        canvas = canvas * (1 - strokes) + rng.uniform(0.0, 0.3, 3) * strokes
        if not clutter:  # drawn after the texture so that both variants consume the generator alike
            canvas = np.full_like(canvas, 0.95)
        # The digit is drawn last, over any stroke, so its mask is exactly the visible digit.
        canvas = canvas * (1 - opacity[..., None]) + ink_colour * opacity[..., None]
        images[i] = np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)
        masks[i] = opacity >= 0.5
    return images, masks, labels


def load_masked_digits(num_images: int = 256, image_size: int = 32, seed: int = 0, distractors: int = 2):
    """A `datasets.Dataset` with columns image (RGB), mask (L, 255 = digit), label (ClassLabel 0-9).

    image_size 32 is twice the default model's 16 px input: the image processor resizes it, and the masks
    are resized to the token grid by the analysis.
    """
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    images, masks, labels = masked_digits_arrays(num_images, image_size, seed, distractors)
    features = Features({"image": ImageFeature(), "mask": ImageFeature(),
                         "label": ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict(
        {
            "image": [Image.fromarray(image) for image in images],
            "mask": [Image.fromarray(mask.astype(np.uint8) * 255) for mask in masks],
            "label": labels.tolist(),
        },
        features=features,
    )
