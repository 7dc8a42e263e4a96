"""Data: digits, imagefolder datasets written to disk, image-mode conversion, and every bad input's message."""

import numpy as np
import pytest
from PIL import Image

from hf_frozenlm.data.images import RandomResizedCropFlip, load_image_classification_data, to_rgb
from hf_frozenlm.errors import DataError
from hf_frozenlm.training.arguments import DataArguments


def write_imagefolder(root, classes=("cat", "dog", "fox"), per_class=6, size=12, corrupt=0):
    """PNG files in class folders, in the modes users send: RGB, L, P, RGBA (+ optionally corrupt files)."""
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "P", "RGBA"]
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            array[..., c % 3] = 255  # a class-dependent colour, so a few steps can learn something
            Image.fromarray(array).convert(modes[i % len(modes)]).save(folder / f"{i}.png")
    for i in range(corrupt):
        (root / classes[0] / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root


def test_digits_split_is_seeded_stratified_and_dark_ink_on_white():
    data = load_image_classification_data(DataArguments(dataset="digits"))
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": 1257, "validation": 180, "test": 360}
    assert data.id2label[3] == "3" and len(data.id2label) == 10
    image = np.asarray(data.splits["train"][0]["image"])
    assert image.shape == (8, 8) and image[0, 0] == 255 and image.min() < 64  # white paper, dark ink
    again = load_image_classification_data(DataArguments(dataset="digits"))
    assert again.splits["test"]["label"] == data.splits["test"]["label"]
    other = load_image_classification_data(DataArguments(dataset="digits", split_seed=1))
    assert other.splits["test"]["label"] != data.splits["test"]["label"]
    # every class in every split (stratified)
    assert all(len(set(split["label"])) == 10 for split in data.splits.values())


def test_imagefolder_classes_modes_and_corrupt_files_skipped(tmp_path, caplog):
    write_imagefolder(tmp_path / "data", corrupt=2)
    with caplog.at_level("WARNING"):
        data = load_image_classification_data(DataArguments(dataset=f"imagefolder:{tmp_path / 'data'}",
                                                            validation_fraction=0.2, test_fraction=0.2))
    assert data.skipped == 2
    assert "Skipped 2 unreadable image(s)" in caplog.text
    assert data.id2label == {0: "cat", 1: "dog", 2: "fox"}
    assert sum(len(s) for s in data.splits.values()) == 18
    assert {to_rgb(row["image"]).mode for row in data.splits["train"]} == {"RGB"}


def test_to_rgb_conversions():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)  # transparent canvas = white paper
    assert to_rgb(Image.new("L", (4, 4), 7)).getpixel((0, 0)) == (7, 7, 7)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("RGB", (4, 4), (10, 200, 30)).convert("P")
    assert to_rgb(palette).mode == "RGB"
    sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((1, 0)) == (255, 255, 255)
    transparent_palette = Image.new("P", (2, 2), 0)
    transparent_palette.info["transparency"] = 0
    assert to_rgb(transparent_palette).getpixel((0, 0)) == (255, 255, 255)


def test_random_resized_crop_flip_keeps_size_and_follows_its_generator():
    from hf_frozenlm.data.randomness import ExampleRandomness

    augment = RandomResizedCropFlip(size=16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    randomness = ExampleRandomness(seed=3)
    outputs = [augment(image, randomness.rng({"example_id": i})) for i in range(5)]
    assert all(o.size == (16, 16) and o.mode == "RGB" for o in outputs)
    assert len({np.asarray(o).tobytes() for o in outputs}) > 1  # examples get different crops
    # The same (seed, epoch, example) gives the same crop, whatever was drawn before: what makes resuming exact.
    again = [augment(image, randomness.rng({"example_id": i})) for i in reversed(range(5))][::-1]
    assert [np.asarray(o).tobytes() for o in again] == [np.asarray(o).tobytes() for o in outputs]
    randomness.epoch = 1
    assert np.asarray(augment(image, randomness.rng({"example_id": 0}))).tobytes() != np.asarray(outputs[0]).tobytes()


def test_hflip_zero_keeps_the_crops_and_drops_the_mirror():
    """--hflip 0 (digits, text): the same crops as with flips, never mirrored; out-of-range values are refused."""
    from hf_frozenlm.data.images import image_augmentation
    from hf_frozenlm.data.randomness import ExampleRandomness
    from hf_frozenlm.errors import UsageError
    from hf_frozenlm.training import parse_train_arguments

    arguments = parse_train_arguments(["--dataset", "imagefolder:unused", "--augment", "on", "--hflip", "0",
                                       "--output_dir", "unused"])
    no_flip = image_augmentation(arguments.data, 16, fill=(0, 0, 0)).crop_flip
    assert no_flip.flip == 0.0
    # An image whose mirror differs everywhere: left half black, right half white.
    image = Image.fromarray(np.concatenate([np.zeros((16, 8, 3)), np.full((16, 8, 3), 255)], axis=1).astype(np.uint8))
    randomness = ExampleRandomness(seed=0)
    for i in range(20):
        out = np.asarray(no_flip(image, randomness.rng({"example_id": i}))).mean(axis=(0, 2))
        assert out[:4].mean() <= out[-4:].mean()  # dark stays on the left
    with pytest.raises(UsageError, match="--hflip 2"):
        parse_train_arguments(["--hflip", "2", "--dataset", "imagefolder:unused", "--output_dir", "unused"])


def _no_labels(root):
    root.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i, i, i)).save(root / f"{i}.png")
    return f"imagefolder:{root}", {}


def _one_class(root):
    write_imagefolder(root, classes=("only",))
    return f"imagefolder:{root}", {}


def _unknown_image_column(root):
    write_imagefolder(root)
    return f"imagefolder:{root}", {"image_column": "picture"}


def _unknown_label_column(root):
    write_imagefolder(root)
    return f"imagefolder:{root}", {"label_column": "category"}


def _strict_corrupt(root):
    write_imagefolder(root, corrupt=1)
    return f"imagefolder:{root}", {"strict_images": True}


def _missing_folder(root):
    return f"imagefolder:{root / 'nowhere'}", {}


def _unknown_split(root):
    write_imagefolder(root)
    return f"imagefolder:{root}", {"validation_split": "dev2"}


def _no_images(root):
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    return f"imagefolder:{root}", {}


def _only_text_files(root):
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "notes.txt").write_text("not an image")
    return f"imagefolder:{root}", {}


@pytest.mark.parametrize("make, message", [
    (_no_labels, "Found no label column: looked for label, labels, fine_label"),
    (_one_class, "a classifier needs at least two"),
    (_unknown_image_column, "--image_column 'picture' is not a column of the dataset; its columns are"),
    (_unknown_label_column, "--label_column 'category' is not a column"),
    (_strict_corrupt, "unreadable image(s) in split 'train'"),
    (_missing_folder, "is not a directory"),
    (_unknown_split, "--validation_split 'dev2' is not a split"),
    # Before: a raw datasets traceback (EmptyDatasetError / "Instruction train corresponds to no data").
    (_no_images, "holds no image files"),
    (_only_text_files, "holds no image files"),
])
def test_bad_data_gets_a_clear_message(tmp_path, make, message):
    dataset, options = make(tmp_path / "data")
    with pytest.raises(DataError) as error:
        load_image_classification_data(DataArguments(dataset=dataset, **options))
    assert message in str(error.value)


def test_bad_data_message_reaches_the_command_line(tmp_path, capsys):
    from hf_frozenlm.cli import main

    dataset, _ = _one_class(tmp_path / "data")
    assert main(["train", "--dataset", dataset, "--output_dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after datasets' progress bars: one line
    assert error.startswith("hf-frozenlm train:") and "needs at least two" in error


def test_hub_style_dataset_columns_splits_and_string_labels(tmp_path):
    """A dataset repository layout (parquet per split), loaded through the same path as a Hub name."""
    import datasets

    rng = np.random.default_rng(0)

    def images(n):
        return [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]

    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["apple", "pear"]),
                                  "extra": datasets.Value("int64")})
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for split, n in (("train", 20), ("test", 6)):
        datasets.Dataset.from_dict({"img": images(n), "fine_label": [i % 2 for i in range(n)], "extra": list(range(n))},
                                   features=features).to_parquet(str(repo / "data" / f"{split}-00000-of-00001.parquet"))
    data = load_image_classification_data(DataArguments(dataset=str(repo), validation_fraction=0.25))
    assert data.id2label == {0: "apple", 1: "pear"}
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 15, "validation": 5, "test": 6}
    assert data.splits["train"].column_names == ["image", "label"]

    # String labels (e.g. from a metadata file) become a ClassLabel with sorted names.
    strings = tmp_path / "strings"
    (strings / "data").mkdir(parents=True)
    plain = datasets.Features({"image": datasets.Image(), "species": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": images(12), "species": ["owl", "crow", "wren"] * 4}, features=plain).to_parquet(
        str(strings / "data" / "train-00000-of-00001.parquet"))
    data = load_image_classification_data(DataArguments(dataset=str(strings), label_column="species",
                                                        validation_fraction=0.25, test_fraction=0.25))
    assert data.id2label == {0: "crow", 1: "owl", 2: "wren"}
    assert sum(len(s) for s in data.splits.values()) == 12
