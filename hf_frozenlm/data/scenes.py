"""3D question answering data: the builtin generated rooms (objects with a type, colour and position, sampled as a
coloured point cloud) and their questions, tokenised with a WordPiece tokenizer trained on the builtin's text.

An example is {"points": (N, 3) float32 xyz in metres, "colors": (N, 3) float32 RGB in [0, 1], "question": str,
"answer": str}. "Left" means smaller x.
"""

from __future__ import annotations

import numpy as np
import torch

OBJECT_TYPES = ("box", "ball", "cylinder", "cone")
OBJECT_COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.7, 0.25), "blue": (0.2, 0.3, 0.9), "yellow": (0.9, 0.85, 0.15)}
SCENE_ANSWERS = [*OBJECT_TYPES, *OBJECT_COLOURS, *(str(n) for n in range(5))]
SLOTS_X = (-1.5, -0.5, 0.5, 1.5)  # objects stand in distinct x slots, so "left of" is never ambiguous
NUM_POINTS = 256


class SceneQADataError(ValueError):
    """A scene or question that cannot be used, with a message saying what was found."""


def _object_surface(kind: str, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` points on the surface of a ~0.5 m object of `kind`, standing on the floor at the origin."""
    if kind == "ball":
        direction = rng.normal(size=(count, 3))
        return direction / np.linalg.norm(direction, axis=1, keepdims=True) * 0.25 + [0, 0, 0.25]
    height = rng.uniform(0, 0.5, count)
    angle = rng.uniform(0, 2 * np.pi, count)
    if kind == "cylinder":
        return np.stack([0.2 * np.cos(angle), 0.2 * np.sin(angle), height], axis=1)
    if kind == "cone":
        radius = 0.25 * (1 - height / 0.5)
        return np.stack([radius * np.cos(angle), radius * np.sin(angle), height], axis=1)
    points = rng.uniform(-0.22, 0.22, (count, 3))  # box: push each point onto its nearest face
    axis = rng.integers(0, 3, count)
    points[np.arange(count), axis] = np.sign(rng.uniform(-1, 1, count)) * 0.22
    return points + [0, 0, 0.22]


def random_room(rng: np.random.Generator) -> list[dict]:
    """2-4 objects {type, colour, x, y} in distinct x slots of a 4 x 4 m room."""
    slots = rng.choice(len(SLOTS_X), size=int(rng.integers(2, 5)), replace=False)
    return [
        {"type": OBJECT_TYPES[int(rng.integers(4))], "colour": list(OBJECT_COLOURS)[int(rng.integers(4))],
         "x": SLOTS_X[int(slot)] + rng.uniform(-0.15, 0.15), "y": rng.uniform(-1.5, 1.5)}
        for slot in slots
    ]


def room_point_cloud(objects: list[dict], rng: np.random.Generator, num_points: int = NUM_POINTS):
    """(points (N, 3), colours (N, 3)): a grey floor and each object's surface in its colour."""
    floor_count = num_points // 4
    per_object = (num_points - floor_count) // len(objects)
    floor = np.c_[rng.uniform(-2, 2, (floor_count, 2)), np.zeros(floor_count)]
    points, colours = [floor], [np.full((floor_count, 3), 0.5)]
    for index, obj in enumerate(objects):
        count = per_object if index < len(objects) - 1 else num_points - floor_count - per_object * (len(objects) - 1)
        points.append(_object_surface(obj["type"], rng, count) + [obj["x"], obj["y"], 0.0])
        colours.append(np.tile(OBJECT_COLOURS[obj["colour"]], (count, 1)))
    points, colours = np.concatenate(points), np.concatenate(colours)
    order = rng.permutation(num_points)  # no information in the point order
    return points[order].astype(np.float32), colours[order].astype(np.float32)


def room_questions(objects: list[dict], rng: np.random.Generator) -> list[tuple[str, str]]:
    """What is left of X (unique X with an object to its left), how many Y, what colour is Z (unique Z)."""
    questions = []
    unique = [o for o in objects if sum(p["type"] == o["type"] for p in objects) == 1]
    with_left = [o for o in unique if any(p["x"] < o["x"] for p in objects)]
    if with_left:
        obj = with_left[int(rng.integers(len(with_left)))]
        left = max((p for p in objects if p["x"] < obj["x"]), key=lambda p: p["x"])
        questions.append((f"what is left of the {obj['type']}?", left["type"]))
    kind = OBJECT_TYPES[int(rng.integers(4))]
    questions.append((f"how many {kind}s are there?", str(sum(o["type"] == kind for o in objects))))
    if unique:
        obj = unique[int(rng.integers(len(unique)))]
        questions.append((f"what color is the {obj['type']}?", obj["colour"]))
    return questions


def builtin_rooms_qa(num_rooms: int, seed: int = 0) -> list[dict]:
    """Question-answer examples over `num_rooms` generated rooms (every supported question per room), seeded."""
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(num_rooms):
        objects = random_room(rng)
        points, colours = room_point_cloud(objects, rng)
        examples += [{"points": points, "colors": colours, "question": q, "answer": a}
                     for q, a in room_questions(objects, rng)]
    return examples


def builtin_scene_qa_tokenizer(vocab_size: int = 256):
    """A WordPiece tokenizer trained on every question template of the builtin rooms."""
    from .data_vqa import train_wordpiece_tokenizer

    rng = np.random.default_rng(54321)
    texts = [q for _ in range(300) for q, _ in room_questions(random_room(rng), rng)]
    return train_wordpiece_tokenizer(texts, vocab_size)


def scene_qa_collator(tokenizer, label2id: dict[str, int] | None = None):
    """examples -> point_values (B, N, 3), point_features (B, N, 3) colours, input_ids, attention_mask (+ labels)."""

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise SceneQADataError("Cannot collate an empty list of examples.")
        sizes = {len(e["points"]) for e in examples}
        if 0 in sizes:
            raise SceneQADataError("Empty scene: an example has no points.")
        if len(sizes) != 1:
            raise SceneQADataError(f"Scenes of different sizes {sorted(sizes)}: resample every scene to one size.")
        batch = dict(tokenizer([e["question"] for e in examples], padding=True, return_tensors="pt"))
        batch.pop("token_type_ids", None)
        batch["point_values"] = torch.from_numpy(np.stack([e["points"] for e in examples]))
        batch["point_features"] = torch.from_numpy(np.stack([e["colors"] for e in examples]))
        if label2id is not None:
            unknown = sorted({e["answer"] for e in examples} - set(label2id))
            if unknown:
                raise SceneQADataError(
                    f"Answers {unknown} are not in the answer vocabulary ({', '.join(label2id)})."
                )
            batch["labels"] = torch.tensor([label2id[e["answer"]] for e in examples])
        return batch

    return collate
