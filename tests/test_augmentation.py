"""DeiT's augmentations against their published definitions: RandAugment (timm's string, operations, magnitude
scale and noise), random erasing (area and aspect ranges, N(0, 1) pixels), and the repeated-augmentation sampler
(every sample `repeats` times per epoch across ranks, through accelerate's own batch sharding)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from hf_frozenlm.data.rand_augment import (
    INCREASING_OPS,
    STANDARD_OPS,
    RandAugment,
    apply_operation,
    parse_rand_augment,
)
from hf_frozenlm.data.random_erasing import RandomErasing
from hf_frozenlm.data.repeated_augmentation import RepeatedAugmentationDataset, RepeatedAugmentationSampler
from hf_frozenlm.errors import UsageError


def photo(seed: int = 0, size=(48, 40)) -> Image.Image:
    """A smooth gradient with noise and a rectangle: enough structure for every operation to change something."""
    rng = np.random.default_rng(seed)
    width, height = size
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    pixels = np.stack([200 * x + 20, 180 * y + 30, 120 * (1 - x) + 60], -1) + rng.normal(0, 12, (height, width, 3))
    pixels[10:25, 12:30] = (230, 40, 90)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# -- the configuration string ------------------------------------------------------------------------------
def test_timm_config_strings_parse_to_their_meaning():
    deit = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert (deit.magnitude, deit.magnitude_std, deit.increasing, deit.num_ops, deit.prob, deit.magnitude_max) == \
        (9.0, 0.5, True, 2, 0.5, 10.0)
    assert deit.ops == INCREASING_OPS and len(deit.ops) == 15
    other = parse_rand_augment("rand-n3-m7-p1.0-mmax8-mstdinf")
    assert (other.num_ops, other.magnitude, other.prob, other.magnitude_max, other.magnitude_std, other.ops) == \
        (3, 7.0, 1.0, 8.0, float("inf"), STANDARD_OPS)
    for bad in ("auto-m9", "rand-q9", "rand-mnine", "rand-p1.5"):
        with pytest.raises(UsageError, match="--aa"):
            parse_rand_augment(bad)


# -- each operation against its definition -----------------------------------------------------------------
IDENTITY_AT_ZERO = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
                    "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "SolarizeIncreasing",
                    "SolarizeAdd")


@pytest.mark.parametrize("name", IDENTITY_AT_ZERO)
def test_magnitude_zero_is_the_identity_where_the_definition_says_so(name):
    image = photo()
    out = apply_operation(image, name, 0.0, np.random.default_rng(0))
    assert out.size == image.size and out.mode == "RGB"
    assert np.array_equal(array(out), array(image)), name


@pytest.mark.parametrize("name", ("AutoContrast", "Equalize", "Invert", "PosterizeIncreasing"))
def test_operations_without_an_identity_at_zero_change_the_image(name):
    image = photo()
    assert not np.array_equal(array(apply_operation(image, name, 0.0, np.random.default_rng(0))), array(image))


def test_pixel_operations_equal_their_numpy_definitions():
    image = photo(1)
    pixels = np.asarray(image).astype(np.int32)
    rng = np.random.default_rng(0)
    # Solarize (increasing) at m=5: invert pixels >= 256 - 128.
    expected = np.where(pixels >= 128, 255 - pixels, pixels)
    assert np.array_equal(array(apply_operation(image, "SolarizeIncreasing", 5, rng)), expected)
    # Solarize (standard) at m=5: threshold 128 as well; at m=2: 51.
    assert np.array_equal(array(apply_operation(image, "Solarize", 2, rng)),
                          np.where(pixels >= 51, 255 - pixels, pixels))
    # Posterize (increasing) at m=5 keeps 4 - int(2) = 2 bits; standard at m=5 keeps int(2) = 2 bits; m=10 -> 0 / 4.
    assert np.array_equal(array(apply_operation(image, "PosterizeIncreasing", 5, rng)), pixels & 0b11000000)
    assert np.array_equal(array(apply_operation(image, "Posterize", 10, rng)), pixels & 0b11110000)
    assert np.array_equal(array(apply_operation(image, "PosterizeIncreasing", 10, rng)), np.zeros_like(pixels))
    # SolarizeAdd at m=10: +110 to pixels below 128, clipped at 255.
    assert np.array_equal(array(apply_operation(image, "SolarizeAdd", 10, rng)),
                          np.where(pixels < 128, np.minimum(pixels + 110, 255), pixels))
    assert np.array_equal(array(apply_operation(image, "Invert", 3, rng)), 255 - pixels)


def test_enhancements_scale_by_one_plus_minus_0_9_m_over_10():
    gray = Image.new("RGB", (16, 16), (100, 100, 100))
    seen = set()
    for seed in range(12):
        value = int(array(apply_operation(gray, "BrightnessIncreasing", 10, np.random.default_rng(seed)))[0, 0, 0])
        seen.add(value)
    assert seen == {10, 190}  # factor 0.1 or 1.9, each sign drawn
    # The standard (non-increasing) scale: 1.8 * m / 10 + 0.1, no sign: m=5 -> 1.0 (identity).
    assert np.array_equal(array(apply_operation(gray, "Brightness", 5, np.random.default_rng(0))), array(gray))


def bright_centroid(image) -> np.ndarray:
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    ys, xs = np.nonzero(pixels > 128)
    return np.array([xs.mean(), ys.mean()])


def test_geometric_magnitudes_follow_timm_scale():
    """Rotate 30 degrees, translate 0.45 of the side, shear 0.3 at m = 10 (either sign), measured on the image."""
    width, height = 101, 81
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[38:43, 70:75] = 255  # a bright dot right of the centre
    dot = Image.fromarray(canvas)
    before = bright_centroid(dot)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])  # PIL's centre, in pixel-index coordinates
    angles = set()
    for seed in range(8):
        after = bright_centroid(apply_operation(dot, "Rotate", 10, np.random.default_rng(seed), fill=(0, 0, 0)))
        a, b = before - centre, after - centre
        angles.add(round(math.degrees(math.atan2(a[0] * b[1] - a[1] * b[0], a @ b)), 1))
    assert len(angles) >= 2 and all(abs(abs(angle) - 30) < 0.5 for angle in angles)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[38:43, 48:53] = 255  # a bright dot at the centre: room to move either way
    dot = Image.fromarray(canvas)
    before = bright_centroid(dot)
    shifts = {round(float(bright_centroid(apply_operation(dot, "TranslateXRel", 10, np.random.default_rng(seed),
                                                          fill=(0, 0, 0)))[0] - before[0]))
              for seed in range(8)}
    assert shifts <= {-45, -46, 45, 46} and len({s > 0 for s in shifts}) == 2  # 0.45 * 101 = 45.5 px either way
    # ShearX at m=10 moves a point at row y by 0.3 * y pixels horizontally (PIL's inverse mapping: -0.3 * y).
    sheared = bright_centroid(apply_operation(dot, "ShearX", 10, np.random.default_rng(0), fill=(0, 0, 0)))
    assert abs(abs(sheared[0] - before[0]) - 0.3 * before[1]) < 1.0 and abs(sheared[1] - before[1]) < 0.5


def test_magnitude_noise_and_ceiling():
    draws = [RandAugment(magnitude=9, magnitude_std=0.5, magnitude_max=100).draw_magnitude(np.random.default_rng(i))
             for i in range(4000)]
    assert abs(np.mean(draws) - 9) < 0.05 and abs(np.std(draws) - 0.5) < 0.05
    clipped = [RandAugment(magnitude=9.8, magnitude_std=0.5).draw_magnitude(np.random.default_rng(i))
               for i in range(500)]
    assert max(clipped) == 10.0 and min(clipped) < 10.0  # timm's ceiling: mmax, default 10
    uniform = [RandAugment(magnitude=6, magnitude_std=float("inf")).draw_magnitude(np.random.default_rng(i))
               for i in range(4000)]
    assert 0 <= min(uniform) < 0.1 and 5.9 < max(uniform) <= 6 and abs(np.mean(uniform) - 3) < 0.1


def test_rand_augment_is_seeded_and_probability_zero_is_the_identity():
    augment = parse_rand_augment("rand-m9-mstd0.5-inc1")
    image = photo(2)
    outputs = [array(augment(image, np.random.default_rng([7, 0, i]))) for i in range(10)]
    again = [array(augment(image, np.random.default_rng([7, 0, i]))) for i in range(10)]
    assert all(np.array_equal(a, b) for a, b in zip(outputs, again))
    assert len({a.tobytes() for a in outputs}) >= 6  # different examples draw different operations
    # Each of the 2 operations applies with probability 0.5: a quarter of the images come out untouched.
    small = photo(2, size=(16, 12))
    untouched = np.mean([np.array_equal(array(augment(small, np.random.default_rng([8, 0, i]))), array(small))
                         for i in range(400)])
    assert abs(untouched - 0.25) < 0.07
    assert all(a.shape == (40, 48, 3) and a.min() >= 0 and a.max() <= 255 for a in outputs)
    never = parse_rand_augment("rand-m9-p0")
    assert all(np.array_equal(array(never(image, np.random.default_rng(i))), array(image)) for i in range(10))


# -- random erasing ----------------------------------------------------------------------------------------
def test_random_erasing_boxes_follow_the_published_ranges():
    erasing = RandomErasing(probability=1.0)
    height, width = 224, 224
    areas, aspects = [], []
    for seed in range(3000):
        box = erasing.box(height, width, np.random.default_rng(seed))
        assert box is not None
        top, left, box_h, box_w = box
        assert 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width
        areas.append(box_h * box_w / (height * width))
        aspects.append(box_h / box_w)
    assert 0.02 * 0.9 <= min(areas) and max(areas) <= (1 / 3) * 1.1
    assert abs(np.mean(areas) - (0.02 + 1 / 3) / 2) < 0.01  # uniform in area
    log_aspects = np.log(aspects)
    assert math.log(0.3) - 0.1 <= log_aspects.min() and log_aspects.max() <= math.log(1 / 0.3) + 0.1
    assert abs(np.mean(log_aspects)) < 0.05  # log-uniform, symmetric around 1


def test_random_erasing_fills_one_box_with_unit_normal_noise_at_its_rate():
    erasing = RandomErasing(probability=0.25)
    image = torch.full((3, 64, 64), 5.0)
    erased_count, noise = 0, []
    for seed in range(2000):
        out = erasing(image, np.random.default_rng(seed))
        changed = out != 5.0
        if changed.any():
            erased_count += 1
            rows, cols = changed.any(0).any(1).nonzero().flatten(), changed.any(0).any(0).nonzero().flatten()
            box = out[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert (box != 5.0).all()  # one rectangle, every pixel and channel replaced
            assert int(changed.sum()) == box.numel()
            noise.append(box.flatten())
    assert abs(erased_count / 2000 - 0.25) < 0.03  # binomial sd ~0.01
    noise = torch.cat(noise)
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
    assert torch.equal(erasing(image, np.random.default_rng(3)), erasing(image, np.random.default_rng(3)))
    assert torch.equal(RandomErasing(probability=0.0)(image, np.random.default_rng(0)), image)


# -- repeated augmentation ---------------------------------------------------------------------------------
def test_repeated_augmentation_repeats_every_sample_across_ranks():
    size, repeats = 50, 3
    for ranks in (1, 2, 3):
        sampler = RepeatedAugmentationSampler(size, num_replicas=ranks, batch_size=4, repeats=repeats, seed=1)
        items = [i for rank in range(ranks) for i in sampler.rank_indices(rank, full=True)]
        full = Counter(i % size for i in items)
        assert set(full) == set(range(size)) and set(full.values()) == {repeats}
        assert sorted(items) == list(range(size * repeats))  # every copy once: copy * N + index
    # With at least as many ranks as repeats, the copies of a sample go to different ranks.
    sampler = RepeatedAugmentationSampler(size, num_replicas=3, batch_size=4, repeats=3, seed=1)
    where = {}
    for rank in range(3):
        for item in sampler.rank_indices(rank, full=True):
            where.setdefault(item % 50, []).append(rank)
    assert all(sorted(ranks) == [0, 1, 2] for ranks in where.values())


def test_repeated_augmentation_epoch_keeps_its_length_and_reshuffles():
    sampler = RepeatedAugmentationSampler(50, num_replicas=2, batch_size=4, repeats=3, seed=1)
    assert sampler.per_rank == 28 and len(sampler) == 56  # ceil(50 / 2) = 25, rounded up to whole batches
    first = list(sampler)
    counts = Counter(i % 50 for i in first)
    assert set(counts.values()) <= {1, 2, 3, 4} and max(counts.values()) >= 3  # about N / 3 images, each ~3 times
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_each_copy_is_the_example_with_an_id_of_its_own():
    from hf_frozenlm.data.randomness import ExampleRandomness

    base = [{"example_id": i, "label": i % 3} for i in range(10)]
    view = RepeatedAugmentationDataset(base, 3)
    assert len(view) == 30
    copies = [view[copy * 10 + 4] for copy in range(3)]
    assert [c["label"] for c in copies] == [1, 1, 1] and [c["example_id"] for c in copies] == [12, 13, 14]
    randomness = ExampleRandomness(0)
    draws = {float(randomness.rng(c).random()) for c in copies}
    assert len(draws) == 3  # each copy draws its own augmentation
    ids = {view[i]["example_id"] for i in range(30)}
    assert len(ids) == 30


def test_accelerate_sharding_gives_each_rank_its_share():
    """Trainer hands the sampler to accelerate, which deals batch j of the stream to process j mod ranks."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    sampler = RepeatedAugmentationSampler(50, num_replicas=2, batch_size=4, repeats=3, seed=5)
    for rank in range(2):
        shard = BatchSamplerShard(BatchSampler(sampler, 4, drop_last=False), num_processes=2, process_index=rank)
        assert [i for batch in shard for i in batch] == sampler.rank_indices(rank)
