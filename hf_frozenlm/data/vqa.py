"""2D VQA and image-text retrieval data: builtin shape scenes, VQAv2 and Flickr30k-style loaders, tokenizer, processor.

A VQA example is {"image": PIL image, "question": str, "answers": [str, ...]} (VQAv2 has 10 human answers per
question; the builtin repeats its one answer 10 times); a retrieval example is {"image": PIL image, "captions": [str, ...]}. Soft answer
scores follow VQAv2: min(1, humans who gave the answer / 3).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .task_metrics import vqa_answer_scores

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
IMAGE_SIZE = 48  # a 3 x 3 grid of 16-pixel cells, one object per cell at most
CELL = 16


class VQADataError(ValueError):
    """Data that cannot be used for VQA or retrieval, with a message saying what was found."""


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


def builtin_shapes_vqa(num_images: int, seed: int = 0) -> list[dict]:
    """VQA examples over `num_images` generated scenes (every supported question kind per image), seeded."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(num_images):
        objects = random_shape_scene(rng)
        image = draw_shape_scene(objects, rng)
        # Ten agreeing "annotators", as VQAv2's ten answers per question: the answer's soft score is 1.
        examples += [{"image": image, "question": q, "answers": [a] * 10} for q, a in shape_questions(objects, rng)]
    return examples


def builtin_shapes_captions(num_images: int, seed: int = 0) -> list[dict]:
    """Retrieval examples: each generated scene with its one caption, seeded."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(num_images):
        objects = random_shape_scene(rng)
        examples.append({"image": draw_shape_scene(objects, rng), "captions": [shape_caption(objects)]})
    return examples


BUILTIN_ANSWERS = [*COLOURS, *(str(n) for n in range(5)), "yes", "no"]


# -- answers -> soft targets ----------------------------------------------------------------------------------
def build_answer_vocabulary(examples: list[dict], max_answers: int | None = None) -> dict[int, str]:
    """id2label of the most frequent answers (VQAv2 practice: the 3,129 most frequent), ties broken by name."""
    counts = Counter(answer for example in examples for answer in example["answers"])
    ranked = sorted(counts, key=lambda a: (-counts[a], a))[:max_answers]
    return dict(enumerate(ranked))


def answer_targets(answers: list[str], label2id: dict[str, int], strict: bool = True) -> torch.Tensor:
    """Soft scores (num_labels,) of one question's answers. strict: an answer outside the vocabulary is an error;
    otherwise it only contributes nothing (VQAv2 training drops rare answers this way)."""
    scores = torch.zeros(len(label2id))
    unknown = [answer for answer in answers if answer not in label2id]
    if unknown and strict:
        raise VQADataError(
            f"Answers {sorted(set(unknown))} are not in the answer vocabulary ({len(label2id)} answers, e.g. "
            f"{list(label2id)[:5]}); rebuild it with build_answer_vocabulary or pass strict=False to drop them."
        )
    for answer, score in vqa_answer_scores(answers).items():
        if answer in label2id:
            scores[label2id[answer]] = score
    return scores


# -- tokenizer and processor ----------------------------------------------------------------------------------
def train_wordpiece_tokenizer(texts, vocab_size: int = 512):
    """A BERT-style WordPiece tokenizer trained offline on `texts` with `tokenizers`, wrapped for transformers."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def builtin_vilt_processor(image_size: int = IMAGE_SIZE, patch_size: int = 16, vocab_size: int = 512):
    """A ViltProcessor for the builtin: the PIL ViLT image processor (torchvision is not needed) at `image_size`,
    and a WordPiece tokenizer trained on every question and caption template the builtin can produce."""
    from transformers import ViltImageProcessorPil, ViltProcessor

    rng = np.random.default_rng(12345)
    texts = []
    for _ in range(400):
        objects = random_shape_scene(rng)
        texts += [q for q, _ in shape_questions(objects, rng)] + [shape_caption(objects)]
    image_processor = ViltImageProcessorPil(size={"shortest_edge": image_size}, size_divisor=patch_size)
    return ViltProcessor(image_processor=image_processor, tokenizer=train_wordpiece_tokenizer(texts, vocab_size))


def vqa_collator(processor, label2id: dict[str, int] | None = None, strict: bool = True):
    """A collate function: examples -> processor tensors (+ soft-score labels when label2id is given)."""

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise VQADataError("Cannot collate an empty list of examples.")
        batch = processor(
            images=[e["image"] for e in examples], text=[e["question"] for e in examples], padding=True,
            return_tensors="pt",
        )
        if label2id is not None:
            batch["labels"] = torch.stack([answer_targets(e["answers"], label2id, strict) for e in examples])
        return dict(batch)

    return collate


# -- VQAv2 and Flickr30k files ---------------------------------------------------------------------------------
def load_vqav2(questions_json, annotations_json, image_folder, image_pattern="COCO_val2014_{image_id:012d}.jpg"):
    """VQAv2 files: questions {"questions": [{"question_id", "image_id", "question"}]}, annotations {"annotations":
    [{"question_id", "answers": [{"answer": str}, ...]}]}; images in `image_folder` named by `image_pattern`."""
    questions = json.loads(Path(questions_json).read_text()).get("questions")
    annotations = json.loads(Path(annotations_json).read_text()).get("annotations")
    if not questions or annotations is None:
        raise VQADataError(f"{questions_json} / {annotations_json}: expected 'questions' and 'annotations' lists.")
    answers = {a["question_id"]: [entry["answer"] for entry in a["answers"]] for a in annotations}
    examples = []
    for question in questions:
        if question["question_id"] not in answers:
            raise VQADataError(f"Question {question['question_id']} has no annotation in {annotations_json}.")
        path = Path(image_folder) / image_pattern.format(image_id=question["image_id"])
        if not path.is_file():
            raise VQADataError(f"Image {path} of question {question['question_id']} does not exist.")
        examples.append({"image": _load_rgb(path), "question": question["question"],
                         "answers": answers[question["question_id"]]})
    return examples


def load_flickr30k(captions_json, image_folder, split: str = "test"):
    """Flickr30k in the Karpathy split format: {"images": [{"filename", "split", "sentences": [{"raw": str}]}]}."""
    images = json.loads(Path(captions_json).read_text()).get("images")
    if not images:
        raise VQADataError(f"{captions_json}: expected an 'images' list (Karpathy split format).")
    examples = []
    for entry in images:
        if entry.get("split") != split:
            continue
        captions = [sentence["raw"] for sentence in entry.get("sentences", [])]
        if not captions:
            raise VQADataError(f"{captions_json}: image {entry.get('filename')} has no captions.")
        examples.append({"image": _load_rgb(Path(image_folder) / entry["filename"]), "captions": captions})
    if not examples:
        raise VQADataError(f"{captions_json}: no images in split {split!r}.")
    return examples


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def retrieval_scores(model, processor, examples: list[dict], batch_size: int = 256):
    """(scores (N_images, N_texts), text_image_ids (N_texts,)): the model's matching logit for every pair."""
    texts = [(caption, index) for index, example in enumerate(examples) for caption in example["captions"]]
    pairs = [(i, t) for i in range(len(examples)) for t in range(len(texts))]
    scores = torch.empty(len(examples), len(texts))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = processor(images=[examples[i]["image"] for i, _ in chunk], text=[texts[t][0] for _, t in chunk],
                              padding=True, return_tensors="pt")
            logits = model(**batch).logits[:, 0]
            for (i, t), value in zip(chunk, logits):
                scores[i, t] = value
    return scores.numpy(), np.array([index for _, index in texts])
