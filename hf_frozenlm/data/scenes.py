"""3D question answering data: the builtin generated rooms (objects with a type, colour and position, sampled as a
coloured point cloud) and their questions, the WordPiece tokenizer of those questions, and scene files.

An example is {"points": (N, 3) float32 xyz in metres, "colors": (N, 3) float32 RGB in [0, 1], "question": str,
"answer": str, "label": id of the answer in `SCENE_ANSWERS`}. "Left" means smaller x. `load_scene_qa_data` turns a
`--dataset` value into the task's `TaskData` (splits by room: no room has questions in two splits).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from .text import train_wordpiece_tokenizer

OBJECT_TYPES = ("box", "ball", "cylinder", "cone")
OBJECT_COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.7, 0.25), "blue": (0.2, 0.3, 0.9), "yellow": (0.9, 0.85, 0.15)}
SCENE_ANSWERS = [*OBJECT_TYPES, *OBJECT_COLOURS, *(str(n) for n in range(5))]
SLOTS_X = (-1.5, -0.5, 0.5, 1.5)  # objects stand in distinct x slots, so "left of" is never ambiguous
NUM_POINTS = 256
BUILTIN = "rooms-qa"
BUILTIN_ROOMS = 1000
DATASET_HELP = (f"{BUILTIN} (builtin: {BUILTIN_ROOMS} generated rooms, 2-3 questions each; {BUILTIN}:N for N rooms)")


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
    """Question-answer examples over `num_rooms` generated rooms (every supported question per room), seeded; each
    example also carries its `room` index."""
    rng = np.random.default_rng(seed)
    examples = []
    for room in range(num_rooms):
        objects = random_room(rng)
        points, colours = room_point_cloud(objects, rng)
        examples += [{"points": points, "colors": colours, "question": q, "answer": a, "room": room}
                     for q, a in room_questions(objects, rng)]
    return examples


def rooms_qa_dataset(num_rooms: int = BUILTIN_ROOMS, seed: int = 0, validation_fraction: float = 0.1,
                     test_fraction: float = 0.2):
    """The builtin as a DatasetDict (numpy format): columns points, colors, question, answer, label (ClassLabel over
    `SCENE_ANSWERS`). Rooms, not questions, are split (seeded), so a test room's scene was never seen in training."""
    import datasets

    if num_rooms < 3:
        raise DataError(f"{BUILTIN}:{num_rooms}: the builtin needs at least 3 rooms (one per split).")
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise DataError(f"Validation and test fractions {validation_fraction}, {test_fraction}: pass values in (0, 1) "
                        "that sum to less than 1.")
    examples = builtin_rooms_qa(num_rooms, seed)
    order = np.random.default_rng(seed).permutation(num_rooms)
    test_rooms = max(1, round(num_rooms * test_fraction))
    validation_rooms = max(1, round(num_rooms * validation_fraction))
    split_of_room = {int(room): "test" for room in order[:test_rooms]}
    split_of_room.update({int(room): "validation" for room in order[test_rooms:test_rooms + validation_rooms]})
    features = datasets.Features({
        "points": datasets.Array2D(shape=(None, 3), dtype="float32"),
        "colors": datasets.Array2D(shape=(None, 3), dtype="float32"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "label": datasets.ClassLabel(names=SCENE_ANSWERS),
    })
    columns = {split: {name: [] for name in features} for split in ("train", "validation", "test")}
    for example in examples:
        split = columns[split_of_room.get(example["room"], "train")]
        for name in ("points", "colors", "question", "answer"):
            split[name].append(example[name])
        split["label"].append(SCENE_ANSWERS.index(example["answer"]))
    splits = datasets.DatasetDict({name: datasets.Dataset.from_dict(table, features=features)
                                   for name, table in columns.items()})
    return splits.with_format("numpy", columns=["points", "colors", "label"], output_all_columns=True)


def builtin_rooms_dataset_size(name: str) -> int:
    """Rooms of a `rooms-qa` or `rooms-qa:N` dataset name; DataError for anything else."""
    if name == BUILTIN:
        return BUILTIN_ROOMS
    prefix, _, size = name.partition(":")
    if prefix == BUILTIN and size.isdigit() and int(size) > 0:
        return int(size)
    raise DataError(f"--dataset {name!r}: 3d-question-answering takes {DATASET_HELP}.")


def load_scene_qa_data(data_args):
    """The `--dataset` of 3D question answering as TaskData: `id2label` the answer vocabulary, `info["tokenizer"]` the
    question tokenizer, `info["num_points"]` the points per scene. `--max_train_samples` / `--max_eval_samples`
    truncate the splits."""
    from ..tasks.base import TaskData

    name = data_args.dataset or BUILTIN
    splits = rooms_qa_dataset(builtin_rooms_dataset_size(name), data_args.split_seed, data_args.validation_fraction,
                              data_args.test_fraction)
    if data_args.max_train_samples:
        splits["train"] = splits["train"].select(range(min(data_args.max_train_samples, len(splits["train"]))))
    if data_args.max_eval_samples:
        for split in ("validation", "test"):
            splits[split] = splits[split].select(range(min(data_args.max_eval_samples, len(splits[split]))))
    return TaskData(splits=splits, name=name, id2label=dict(enumerate(SCENE_ANSWERS)),
                    info={"tokenizer": builtin_scene_qa_tokenizer(), "num_points": NUM_POINTS, "point_feature_size": 3})


# -- the question tokenizer -------------------------------------------------------------------------------------
def builtin_scene_qa_tokenizer(vocab_size: int = 256):
    """A WordPiece tokenizer trained on every question template of the builtin rooms ([PAD] is id 0, which the
    model's question embedding keeps at zero)."""
    rng = np.random.default_rng(54321)
    texts = [q for _ in range(300) for q, _ in room_questions(random_room(rng), rng)]
    return train_wordpiece_tokenizer(texts, vocab_size)


# -- scene files ------------------------------------------------------------------------------------------------
SCENE_EXTENSIONS = (".npz", ".ply", ".npy", ".txt", ".xyz")
PLY_COLOUR_NAMES = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))


def _unit_colours(colours: np.ndarray, path: str, eight_bit: bool) -> np.ndarray:
    """Colours as floats in [0, 1]: 8-bit ones (integer types, or values above 1 and at most 255) are divided by 255."""
    colours = np.asarray(colours, dtype=np.float64)
    if not np.isfinite(colours).all():
        raise DataError(f"{path}: the colours hold NaN or infinite values.")
    if eight_bit or (colours.size and colours.max() > 1 and colours.max() <= 255 and colours.min() >= 0):
        colours = colours / 255.0
    if colours.size and (colours.min() < 0 or colours.max() > 1):
        raise DataError(f"{path}: colours range over [{colours.min():.3g}, {colours.max():.3g}]; pass RGB in [0, 1] "
                        "(or 8-bit 0-255).")
    return colours.astype(np.float32)


def read_scene(path: str) -> np.ndarray:
    """A coloured scene file -> (N, 6) float32: xyz, then RGB in [0, 1].

    .npz: arrays `points` (N, 3) and `colors` / `colours` / `rgb` (N, 3), or `points` (N, 6); .ply: vertices x, y, z
    and red, green, blue (8-bit colours are scaled to [0, 1]); .npy / .txt / .xyz: (N, 6) columns x y z r g b.
    """
    from .points import read_point_cloud, read_ply_vertices

    extension = os.path.splitext(path)[1].lower()
    if extension not in SCENE_EXTENSIONS:
        raise DataError(f"{path}: unsupported scene extension; use one of {', '.join(SCENE_EXTENSIONS)} with xyz and "
                        "RGB colours.")
    if extension == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not a readable .npz file ({error}).") from error
        points_key = next((k for k in ("points", "xyz", "pos") if k in arrays), None)
        colour_key = next((k for k in ("colors", "colours", "rgb", "color", "colour") if k in arrays), None)
        if points_key is None:
            raise DataError(f"{path} has no `points` array (it holds {sorted(arrays)}).")
        points = np.asarray(arrays[points_key])
        if points.ndim != 2 or points.shape[1] < 3:
            raise DataError(f"{path}: `{points_key}` has shape {points.shape}; expected (points, 3).")
        if colour_key is not None:
            colours, eight_bit = np.asarray(arrays[colour_key]), np.issubdtype(arrays[colour_key].dtype, np.integer)
        elif points.shape[1] >= 6:
            colours, eight_bit = points[:, 3:6], False
        else:
            raise DataError(f"{path} has no colours: add a `colors` array (N, 3) beside `points`.")
        points = points[:, :3]
    elif extension == ".ply":
        try:
            vertices = read_ply_vertices(path)
        except (ValueError, OSError, KeyError, UnicodeDecodeError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(f"{path} is not a readable PLY file ({type(error).__name__}: {error}).") from error
        names = next((names for names in PLY_COLOUR_NAMES if all(name in vertices for name in names)), None)
        if names is None:
            raise DataError(f"{path}: the PLY vertices have no red, green, blue properties ({sorted(vertices)}).")
        points = np.stack([vertices[axis] for axis in "xyz"], axis=1)
        colours = np.stack([vertices[name] for name in names], axis=1)
        eight_bit = np.issubdtype(colours.dtype, np.integer)
    else:
        table = read_point_cloud(path)
        if table.shape[1] < 6:
            raise DataError(f"{path} has {table.shape[1]} columns; a scene needs 6: x y z r g b.")
        points, colours, eight_bit = table[:, :3], table[:, 3:6], False
    if colours.shape != points.shape:
        raise DataError(f"{path}: {len(points)} points but colours of shape {colours.shape}; pass one RGB per point.")
    if len(points) == 0:
        raise DataError(f"{path} holds no points.")
    if not np.isfinite(points.astype(np.float64)).all():
        raise DataError(f"{path} holds NaN or infinite coordinates; drop or repair those points.")
    return np.concatenate([points.astype(np.float32), _unit_colours(colours, path, eight_bit)], axis=1)


def write_scene(path: str, points: np.ndarray, colours: np.ndarray) -> str:
    """A scene as the .npz `read_scene` and the pipeline read: arrays `points` (N, 3) and `colors` (N, 3)."""
    np.savez(path, points=np.asarray(points, np.float32), colors=np.asarray(colours, np.float32))
    return path
