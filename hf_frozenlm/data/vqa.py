"""2D VQA and image-text retrieval data: the builtin shape scenes, VQAv2 and Flickr30k (Karpathy) files, the ViLT
processor (image processor + a WordPiece tokenizer trained offline on the data's own text).

Every source becomes a `datasets.DatasetDict` with train / validation / test:
- VQA: {"image", "question", "answers": [str, ...]} (VQAv2 has ten human answers per question; the builtin repeats
  its one answer ten times). Soft answer scores follow VQAv2: min(1, humans who gave the answer / 3).
- retrieval: {"image", "captions": [str, ...]} (one row per image).
Questions about one image never straddle splits: the splits are carved by image.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..errors import DataError
from .splits import carve_missing_splits
from .text import train_wordpiece_tokenizer

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
IMAGE_SIZE = 48  # a 3 x 3 grid of 16-pixel cells, one object per cell at most
CELL = 16
BUILTIN_ANSWERS = [*COLOURS, *(str(n) for n in range(5)), "yes", "no"]
# Scenes generated for each builtin (carved 70/10/20 into train/validation/test by default) and their seed: the
# builtins are fixed datasets; --split_seed only changes how they are carved.
BUILTIN_SCENES = {"shapes-vqa": 1500, "shapes-captions": 1500}
BUILTIN_SEED = 0
# ViLT's text limit (max_text_len 40 in the paper's code): longer texts are truncated.
MAX_TEXT_TOKENS = 40
VQA_MAX_ANSWERS = 3129  # VQAv2 practice: the answer vocabulary is the 3,129 most frequent answers


# -- builtin: generated scenes of coloured shapes -----------------------------------------------------------
def random_shape_scene(rng: np.random.Generator) -> list[dict]:
    """1-4 objects, each {shape, colour, row, col} in a distinct cell of a 3 x 3 grid."""
    cells = rng.choice(9, size=int(rng.integers(1, 5)), replace=False)
    return [
        {"shape": SHAPES[int(rng.integers(3))], "colour": list(COLOURS)[int(rng.integers(4))],
         "row": int(cell) // 3, "col": int(cell) % 3}
        for cell in cells
    ]


def draw_shape_scene(objects: list[dict], rng: np.random.Generator | None = None) -> Image.Image:
    """Render objects on a grey background; small jitter in position and size when `rng` is given."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        jitter = rng.integers(-1, 2, 2) if rng is not None else (0, 0)
        radius = 6 if rng is None else int(rng.integers(5, 8))
        cx, cy = obj["col"] * CELL + CELL // 2 + int(jitter[0]), obj["row"] * CELL + CELL // 2 + int(jitter[1])
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        colour = COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse(box, fill=colour)
        elif obj["shape"] == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    return image


def shape_questions(objects: list[dict], rng: np.random.Generator) -> list[tuple[str, str]]:
    """One question of each kind that the scene supports: colour, count, existence, relative position."""
    questions = []
    unique = [o for o in objects if sum(p["shape"] == o["shape"] for p in objects) == 1]
    if unique:
        obj = unique[int(rng.integers(len(unique)))]
        questions.append((f"what color is the {obj['shape']}?", obj["colour"]))
    if rng.random() < 0.5:
        colour = list(COLOURS)[int(rng.integers(4))]
        count = sum(o["colour"] == colour for o in objects)
        questions.append((f"how many {colour} shapes are there?", str(count)))
    else:
        shape = SHAPES[int(rng.integers(3))]
        count = sum(o["shape"] == shape for o in objects)
        questions.append((f"how many {shape}s are there?", str(count)))
    colour, shape = list(COLOURS)[int(rng.integers(4))], SHAPES[int(rng.integers(3))]
    if rng.random() < 0.5:  # ask about a present object half the time, so yes and no are balanced
        obj = objects[int(rng.integers(len(objects)))]
        colour, shape = obj["colour"], obj["shape"]
    exists = any(o["colour"] == colour and o["shape"] == shape for o in objects)
    questions.append((f"is there a {colour} {shape}?", "yes" if exists else "no"))
    distinct = [o for o in objects if sum((p["colour"], p["shape"]) == (o["colour"], o["shape"]) for p in objects) == 1]
    if len(distinct) >= 2:
        a, b = (distinct[i] for i in rng.choice(len(distinct), 2, replace=False))
        answer = "yes" if a["col"] < b["col"] else "no"
        questions.append((f"is the {a['colour']} {a['shape']} left of the {b['colour']} {b['shape']}?", answer))
    return questions


def shape_caption(objects: list[dict]) -> str:
    """Objects from left to right (then top to bottom): 'a red circle, a blue square and a green triangle'."""
    ordered = sorted(objects, key=lambda o: (o["col"], o["row"]))
    names = [f"a {o['colour']} {o['shape']}" for o in ordered]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def builtin_shapes_vqa(num_images: int, seed: int = BUILTIN_SEED) -> list[dict]:
    """VQA examples over `num_images` generated scenes (every supported question kind per image), seeded; each
    example carries `image_id`, the scene it asks about."""
    rng = np.random.default_rng(seed)
    examples = []
    for image_id in range(num_images):
        objects = random_shape_scene(rng)
        image = draw_shape_scene(objects, rng)
        # Ten agreeing "annotators", as VQAv2's ten answers per question: the answer's soft score is 1.
        examples += [{"image": image, "question": q, "answers": [a] * 10, "image_id": image_id}
                     for q, a in shape_questions(objects, rng)]
    return examples


def builtin_shapes_captions(num_images: int, seed: int = BUILTIN_SEED) -> list[dict]:
    """Retrieval examples: generated scenes with their one caption, seeded. Every caption is unique, as in Flickr30k:
    two images with the same caption would make ranking them a coin toss (scenes repeating a caption are redrawn)."""
    rng = np.random.default_rng(seed)
    examples, seen = [], set()
    while len(examples) < num_images:
        objects = random_shape_scene(rng)
        image, caption = draw_shape_scene(objects, rng), shape_caption(objects)
        if caption not in seen:
            seen.add(caption)
            examples.append({"image": image, "captions": [caption], "image_id": len(examples)})
    return examples


# -- answers -> soft targets ----------------------------------------------------------------------------------
def normalize_answer(answer: str) -> str:
    """The light normalisation VQA answers need to be compared: lower case, single spaces, no final period."""
    return re.sub(r"\s+", " ", str(answer).strip().lower()).rstrip(".").strip()


def vqa_answer_scores(answers: list[str]) -> dict[str, float]:
    """VQAv2 soft scores of one question's human answers: score(a) = min(1, count(a) / 3)."""
    return {answer: min(1.0, count / 3.0) for answer, count in Counter(answers).items()}


def build_answer_vocabulary(answer_lists, max_answers: int | None = VQA_MAX_ANSWERS) -> dict[int, str]:
    """id2label of the most frequent answers (VQAv2 practice: the 3,129 most frequent), ties broken by name."""
    counts = Counter(answer for answers in answer_lists for answer in answers)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))[:max_answers]
    return dict(enumerate(ranked))


def answer_targets(answers: list[str], label2id: dict[str, int], strict: bool = True) -> torch.Tensor:
    """Soft scores (num_labels,) of one question's answers. strict: an answer outside the vocabulary is an error;
    otherwise it only contributes nothing (VQAv2 training drops rare answers this way)."""
    scores = torch.zeros(len(label2id))
    unknown = [answer for answer in answers if answer not in label2id]
    if unknown and strict:
        raise DataError(
            f"Answers {sorted(set(unknown))} are not in the answer vocabulary ({len(label2id)} answers, e.g. "
            f"{list(label2id)[:5]}); rebuild it with build_answer_vocabulary or pass strict=False to drop them."
        )
    for answer, score in vqa_answer_scores(answers).items():
        if answer in label2id:
            scores[label2id[answer]] = score
    return scores


# -- tokenizer and processor ----------------------------------------------------------------------------------
def vilt_processor(tokenizer, image_size: int, patch_size: int):
    """A ViltProcessor: the PIL ViLT image processor (no torchvision needed; shortest edge resized to `image_size`,
    sides padded to multiples of `patch_size`, pixel_mask marking the image) and `tokenizer`."""
    from transformers import ViltImageProcessorPil, ViltProcessor

    image_processor = ViltImageProcessorPil(size={"shortest_edge": image_size}, size_divisor=patch_size)
    return ViltProcessor(image_processor=image_processor, tokenizer=tokenizer)


def builtin_texts() -> list[str]:
    """Every question and caption template the builtins produce (400 seeded scenes cover them all)."""
    rng = np.random.default_rng(12345)
    texts = []
    for _ in range(400):
        objects = random_shape_scene(rng)
        texts += [q for q, _ in shape_questions(objects, rng)] + [shape_caption(objects)]
    return texts


def builtin_vilt_processor(image_size: int = IMAGE_SIZE, patch_size: int = 16, vocab_size: int = 512,
                           max_length: int = MAX_TEXT_TOKENS):
    """The ViltProcessor of the builtins: a WordPiece tokenizer trained on every question and caption template the
    builtins can produce (the same for both, whatever the split)."""
    return vilt_processor(train_wordpiece_tokenizer(builtin_texts(), vocab_size, max_length), image_size, patch_size)


# -- splits ------------------------------------------------------------------------------------------------
def split_by_image(examples: list[dict], seed: int, validation_fraction: float, test_fraction: float) -> dict:
    """train / validation / test lists carved by `image_id`, so that no image has questions in two splits."""
    for name, fraction in (("validation", validation_fraction), ("test", test_fraction)):
        if not 0 < fraction < 1:
            raise DataError(f"The {name} fraction is {fraction}; pass a value in (0, 1).")
    if validation_fraction + test_fraction >= 1:
        raise DataError(f"Validation ({validation_fraction}) and test ({test_fraction}) fractions leave no training "
                        "data; their sum must be below 1.")
    images = sorted({example["image_id"] for example in examples}, key=str)
    if len(images) < 3:
        raise DataError(f"The dataset has {len(images)} image(s); carving train / validation / test needs at least 3.")
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = max(1, round(len(images) * test_fraction))
    num_validation = max(1, round(len(images) * validation_fraction))
    split_of = {}
    for rank, index in enumerate(order):
        split_of[images[index]] = "test" if rank < num_test else "validation" if rank < num_test + num_validation \
            else "train"
    splits = {"train": [], "validation": [], "test": []}
    for example in examples:
        splits[split_of[example["image_id"]]].append(example)
    return splits


def vqa_features():
    import datasets

    return datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                              "answers": datasets.Sequence(datasets.Value("string")),
                              "image_id": datasets.Value("string")})


def caption_features():
    import datasets

    return datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string")),
                              "image_id": datasets.Value("string")})


def to_dataset_dict(splits: dict, features):
    import datasets

    return datasets.DatasetDict({
        name: datasets.Dataset.from_list([{**e, "image_id": str(e["image_id"])} for e in rows], features=features)
        for name, rows in splits.items()
    })


# -- VQAv2 and Flickr30k files ---------------------------------------------------------------------------------
def read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{what} {path}: no such file.") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read {what} {path} as JSON ({error}).") from error


def coco_images_by_id(image_dir: str) -> dict[int, str]:
    """image id -> path of the images in a COCO folder: `COCO_train2014_000000000009.jpg` (2014 naming) or
    `000000000009.jpg` (2017 naming): the id is the name's last run of digits."""
    if not os.path.isdir(image_dir):
        raise DataError(f"The image folder {image_dir} does not exist.")
    paths = {}
    for name in os.listdir(image_dir):
        match = re.search(r"(\d+)\.(jpe?g|png)$", name, re.IGNORECASE)
        if match:
            paths[int(match.group(1))] = os.path.join(image_dir, name)
    return paths


def readable_image(path: str) -> bool:
    """Whether PIL recognises the file as an image (header only: cheap for a whole COCO folder)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types for broken files
        return False


def load_vqav2(questions_json: str, annotations_json: str, image_dir: str, strict_images: bool = False):
    """VQAv2 files: questions {"questions": [{"question_id", "image_id", "question"}]}, annotations {"annotations":
    [{"question_id", "answers": [{"answer": str}, ...]}]}, COCO images in `image_dir`.

    Returns (examples with the image's path, number of questions skipped because their image is missing or
    unreadable; with `strict_images` those are errors)."""
    questions = read_json(questions_json, "The VQAv2 questions file").get("questions")
    annotations = read_json(annotations_json, "The VQAv2 annotations file").get("annotations")
    if not isinstance(questions, list) or not questions or not isinstance(annotations, list):
        raise DataError(f"{questions_json} / {annotations_json}: expected a non-empty 'questions' list and an "
                        "'annotations' list (the VQAv2 v2_OpenEnded_mscoco_*_questions.json / "
                        "v2_mscoco_*_annotations.json files).")
    try:
        answers = {a["question_id"]: [normalize_answer(entry["answer"]) for entry in a["answers"]]
                   for a in annotations}
    except (KeyError, TypeError) as error:
        raise DataError(f"{annotations_json}: an annotation lacks question_id or answers[].answer ({error}).") from None
    images = coco_images_by_id(image_dir)
    examples, skipped, checked = [], 0, {}
    for question in questions:
        try:
            question_id, image_id, text = question["question_id"], int(question["image_id"]), question["question"]
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{questions_json}: a question lacks question_id, image_id or question ({error}).") \
                from None
        if question_id not in answers:
            raise DataError(f"Question {question_id} has no annotation in {annotations_json}: the two files are not "
                            "of the same split.")
        path = images.get(image_id)
        if path is not None and path not in checked:
            checked[path] = readable_image(path)
        if path is None or not checked[path]:
            problem = (f"its image {image_id} is not in {image_dir}" if path is None
                       else f"{path} is not a readable image")
            if strict_images:
                raise DataError(f"Question {question_id}: {problem} (drop --strict_images to skip such questions).")
            skipped += 1
            continue
        examples.append({"image": path, "question": text, "answers": answers[question_id], "image_id": image_id})
    if not examples:
        raise DataError(f"None of the {len(questions)} questions of {questions_json} has a readable image in "
                        f"{image_dir}.")
    return examples, skipped


KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "validation", "test": "test"}


def load_flickr30k(karpathy_json: str, image_dir: str, strict_images: bool = False):
    """Flickr30k in the Karpathy split format: {"images": [{"filename", "split", "sentences": [{"raw": str}]}]}.

    Returns ({split: examples}, images skipped). "restval" joins train (as in the paper's practice), "val" is
    validation."""
    images = read_json(karpathy_json, "The Karpathy-split captions file").get("images")
    if not isinstance(images, list) or not images:
        raise DataError(f"{karpathy_json}: expected an 'images' list (the Karpathy split format, "
                        "dataset_flickr30k.json).")
    if not os.path.isdir(image_dir):
        raise DataError(f"The image folder {image_dir} does not exist.")
    splits, skipped = {}, 0
    for index, entry in enumerate(images):
        if not isinstance(entry, dict) or "filename" not in entry:
            raise DataError(f"{karpathy_json}: image entry {index} has no 'filename'.")
        split = KARPATHY_SPLITS.get(entry.get("split"))
        if split is None:
            raise DataError(f"{karpathy_json}: image {entry['filename']} has split {entry.get('split')!r}; the "
                            f"Karpathy format uses {', '.join(KARPATHY_SPLITS)}.")
        captions = [str(sentence.get("raw", "")).strip() for sentence in entry.get("sentences") or []]
        captions = [caption for caption in captions if caption]
        if not captions:
            raise DataError(f"{karpathy_json}: image {entry['filename']} has no captions.")
        path = os.path.join(image_dir, entry["filename"])
        if not os.path.isfile(path) or not readable_image(path):
            if strict_images:
                raise DataError(f"{path} (listed in {karpathy_json}) is missing or not a readable image.")
            skipped += 1
            continue
        splits.setdefault(split, []).append({"image": path, "captions": captions, "image_id": entry["filename"]})
    if not splits.get("train"):
        raise DataError(f"{karpathy_json}: no readable images in the train split; training needs some.")
    return splits, skipped


# -- the task datasets -------------------------------------------------------------------------------------
def _file_parts(dataset: str, count: int, spelling: str) -> list[str]:
    parts = [part.strip() for part in dataset.split(":", 1)[1].split(",")]
    if len(parts) != count or not all(parts):
        raise DataError(f"--dataset {dataset!r}: spell it {spelling}.")
    return parts


def builtin_size(dataset: str, builtin: str) -> int | None:
    """The scene count `builtin[:N]` asks for (the builtin's own size without N); None for any other dataset."""
    name, _, size = dataset.partition(":")
    if name != builtin:
        return None
    if not size:
        return BUILTIN_SCENES[builtin]
    if not size.isdigit() or int(size) < 20:
        raise DataError(f"--dataset {dataset}: {builtin}:N takes a number of scenes of at least 20 (e.g. "
                        f"{builtin}:600).")
    return int(size)


def _task_data(splits: dict, features, name: str, id2label=None, skipped: int = 0):
    """TaskData of train / validation / test (lists of examples or Datasets)."""
    import datasets

    from ..tasks.base import TaskData

    for split in ("train", "validation", "test"):
        if split not in splits or len(splits[split]) == 0:
            raise DataError(f"Split {split!r} of {name} is empty; the dataset is too small to carve it (pass a larger "
                            "dataset or other --validation_fraction / --test_fraction).")
    if not isinstance(splits, datasets.DatasetDict):
        splits = to_dataset_dict(splits, features)
    return TaskData(splits=splits, name=name, id2label=id2label, skipped=skipped)


def load_vqa_data(data_args, builtin: str = "shapes-vqa"):
    """TaskData of `--dataset`: the builtin shapes-vqa (shapes-vqa:N: N scenes instead of 1,500), or
    vqav2:QUESTIONS_JSON,ANNOTATIONS_JSON,IMAGE_DIR (one VQAv2 split; validation and test are carved from it by image).
    id2label is the answer vocabulary."""
    dataset = data_args.dataset or builtin
    fractions = (data_args.split_seed, data_args.validation_fraction, data_args.test_fraction)
    size = builtin_size(dataset, builtin)
    if size is not None:
        examples = builtin_shapes_vqa(size)
        return _task_data(split_by_image(examples, *fractions), vqa_features(), dataset,
                          dict(enumerate(BUILTIN_ANSWERS)))
    if dataset.startswith("vqav2:"):
        questions, annotations, images = _file_parts(dataset, 3, "vqav2:QUESTIONS_JSON,ANNOTATIONS_JSON,IMAGE_DIR")
        examples, skipped = load_vqav2(questions, annotations, images, data_args.strict_images)
        splits = split_by_image(examples, *fractions)
        # The vocabulary comes from the training split only: held-out answers must not shape the model.
        id2label = build_answer_vocabulary(example["answers"] for example in splits["train"])
        if len(id2label) < 2:
            raise DataError(f"The VQAv2 files hold {len(id2label)} distinct answer(s) in the training split; a "
                            "classifier over answers needs at least two.")
        return _task_data(splits, vqa_features(), dataset, id2label, skipped)
    raise DataError(f"--dataset {dataset!r}: visual-question-answering takes {builtin} (builtin) or "
                    "vqav2:QUESTIONS_JSON,ANNOTATIONS_JSON,IMAGE_DIR.")


def load_caption_data(data_args, builtin: str = "shapes-captions"):
    """TaskData of `--dataset`: the builtin shapes-captions (shapes-captions:N: N scenes instead of 1,500), or
    flickr30k:KARPATHY_JSON,IMAGE_DIR (the Karpathy splits; a split the file lacks is carved from train)."""
    dataset = data_args.dataset or builtin
    size = builtin_size(dataset, builtin)
    if size is not None:
        examples = builtin_shapes_captions(size)
        splits = split_by_image(examples, data_args.split_seed, data_args.validation_fraction, data_args.test_fraction)
        return _task_data(splits, caption_features(), dataset)
    if dataset.startswith("flickr30k:"):
        karpathy_json, images = _file_parts(dataset, 2, "flickr30k:KARPATHY_JSON,IMAGE_DIR")
        splits, skipped = load_flickr30k(karpathy_json, images, data_args.strict_images)
        # Each row is one image, so carving rows carves images: a missing validation / test split comes from train.
        table = carve_missing_splits(to_dataset_dict(splits, caption_features()), None, data_args.split_seed,
                                     data_args.validation_fraction, data_args.test_fraction)
        return _task_data(table, caption_features(), dataset, skipped=skipped)
    raise DataError(f"--dataset {dataset!r}: image-text-retrieval takes {builtin} (builtin) or "
                    "flickr30k:KARPATHY_JSON,IMAGE_DIR.")
