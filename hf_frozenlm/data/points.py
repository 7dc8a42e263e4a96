"""Point-cloud classification datasets: the builtin 3D shapes, `pointfolder:PATH` (.npy/.npz/.ply/.off/.txt files in
class folders) or `h5:PATH` (the ModelNet40 and ScanObjectNN HDF5 layouts).

Everything becomes a `datasets.DatasetDict` with `train`/`validation`/`test` splits, a `points` column ((N, 3) float32
xyz, N may differ per cloud) and a `label` column of `ClassLabel` ids, kept in numpy format; the model's
`PointCloudFeatureExtractor` resamples each cloud to its number of points. `load_point_cloud_data` turns a `--dataset`
value into the task's `TaskData`.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from ..errors import DataError
from ..modeling.frozenlm_processing import normalize_cloud
from .splits import carve_missing_splits

POINT_EXTENSIONS = (".npy", ".npz", ".ply", ".off", ".txt", ".xyz")
SCANOBJECTNN_LABELS = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed", "pillow", "sink",
    "sofa", "toilet",
)

# -- builtin: 3D shapes ---------------------------------------------------------------------------------------------
SHAPES3D_LABELS = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid")


def _triangle_samples(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` points uniform over the surface of a triangle mesh ((V, 3) vertices, (F, 3) vertex indices)."""
    triangles = vertices[faces]  # (F, 3, 3)
    areas = np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=1)
    if not np.isfinite(areas).all() or areas.sum() <= 0:
        raise DataError("The mesh has no area to sample points from.")
    chosen = rng.choice(len(faces), size=count, p=areas / areas.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1  # reflect into the triangle so that samples stay uniform
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    a, b, c = triangles[chosen, 0], triangles[chosen, 1], triangles[chosen, 2]
    return a + u[:, None] * (b - a) + v[:, None] * (c - a)


def shape_surface(name: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) points uniform over the surface of a canonical shape (before rotation and noise)."""
    if name == "sphere":
        points = rng.normal(size=(count, 3))
        return points / np.linalg.norm(points, axis=1, keepdims=True)
    if name == "cube":
        points = rng.uniform(-1, 1, size=(count, 3))
        axis = rng.integers(0, 3, size=count)
        points[np.arange(count), axis] = rng.choice([-1.0, 1.0], size=count)  # each face equally likely: equal areas
        return points
    if name == "cylinder":  # radius 1, height 2: side area 4*pi, each cap pi
        side = rng.random(count) < 4 / 6
        angle = rng.uniform(0, 2 * np.pi, count)
        radius = np.where(side, 1.0, np.sqrt(rng.random(count)))
        z = np.where(side, rng.uniform(-1, 1, count), rng.choice([-1.0, 1.0], size=count))
        return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], axis=1)
    if name == "cone":  # base radius 1 at z=-1, apex at z=1: side area pi*sqrt(5), base pi
        side = rng.random(count) < np.sqrt(5) / (np.sqrt(5) + 1)
        angle = rng.uniform(0, 2 * np.pi, count)
        t = np.sqrt(rng.random(count))  # distance from the apex (side) or the centre (base), area-uniform
        radius = t
        z = np.where(side, 1 - 2 * t, -1.0)
        return np.stack([radius * np.cos(angle), radius * np.sin(angle), z], axis=1)
    if name == "torus":  # major radius 1, minor 0.35; rejection sampling makes the surface density uniform
        major, minor = 1.0, 0.35
        points = []
        while sum(len(p) for p in points) < count:
            u, v = rng.uniform(0, 2 * np.pi, (2, 2 * count))
            keep = rng.random(2 * count) < (major + minor * np.cos(v)) / (major + minor)
            u, v = u[keep], v[keep]
            ring = major + minor * np.cos(v)
            points.append(np.stack([ring * np.cos(u), ring * np.sin(u), minor * np.sin(v)], axis=1))
        return np.concatenate(points)[:count]
    if name == "pyramid":  # square base at z=-1, apex at z=1
        vertices = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [0, 0, 1]], dtype=np.float64)
        faces = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
        return _triangle_samples(vertices, faces, count, rng)
    raise ValueError(f"Unknown shape {name!r}; shapes: {', '.join(SHAPES3D_LABELS)}.")


def random_rotation(rng: np.random.Generator, upright: bool = True) -> np.ndarray:
    """A random rotation matrix: about the vertical (z) axis by a uniform angle when `upright` (shapes keep their up
    axis, as ModelNet40's aligned models), otherwise uniform over SO(3) (QR of a Gaussian matrix, signs fixed)."""
    if upright:
        angle = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def shapes3d_cloud(
    label: int, rng: np.random.Generator, num_points: int = 1024, noise: float = 0.01, upright: bool = True
) -> np.ndarray:
    """One (num_points, 3) float32 cloud of class `label`: surface samples, stretched a little, rotated, noisy."""
    points = shape_surface(SHAPES3D_LABELS[label], num_points, rng)
    points = points * rng.uniform(0.85, 1.15, size=3)  # mild anisotropic scale: shapes vary within a class
    points = points @ random_rotation(rng, upright).T
    points = normalize_cloud(points) + rng.normal(scale=noise, size=points.shape)
    return points.astype(np.float32)


def shapes3d_dataset(
    clouds_per_class: int = 100, num_points: int = 1024, seed: int = 0, validation_fraction: float = 0.1,
    test_fraction: float = 0.2, upright: bool = True, clutter_fraction: float = 0.0,
):
    """The builtin 3D-shape set as a seeded, stratified DatasetDict with `points` ((N, 3) float32) and `label`.

    upright=True rotates each shape about the vertical axis only, like ModelNet40's aligned models; False rotates
    uniformly over SO(3), which a small model needs far more data and steps to become invariant to.
    clutter_fraction > 0: that share of each cloud's points scattered around the shape (`cluttered_shapes3d_cloud`),
    and an `on_shape` column beside `points` and `label` (the `shapes3d-cluttered` builtin).
    """
    import datasets

    rng = np.random.default_rng(seed)
    labels = [label for label in range(len(SHAPES3D_LABELS)) for _ in range(clouds_per_class)]
    columns = {"points": datasets.Array2D(shape=(None, 3), dtype="float32")}
    if clutter_fraction > 0:
        clouds = [cluttered_shapes3d_cloud(label, rng, num_points, clutter_fraction, upright) for label in labels]
        data = {"points": [points for points, _ in clouds], "on_shape": [on_shape for _, on_shape in clouds]}
        columns["on_shape"] = datasets.Sequence(datasets.Value("bool"))
    else:
        data = {"points": [shapes3d_cloud(label, rng, num_points, upright=upright) for label in labels]}
    features = datasets.Features({**columns, "label": datasets.ClassLabel(names=list(SHAPES3D_LABELS))})
    table = datasets.Dataset.from_dict({**data, "label": labels}, features=features)
    splits = carve_missing_splits(datasets.DatasetDict(train=table), "label", seed, validation_fraction, test_fraction)
    return splits.with_format("numpy")


def cluttered_shapes3d_cloud(label: int, rng: np.random.Generator, num_points: int = 1024,
                             clutter_fraction: float = 0.25, upright: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(points (num_points, 3) float32, on_shape (num_points,) bool): a builtin shape with a `clutter_fraction` of its
    points replaced by points drawn uniformly in the unit ball around it, in random order. `on_shape` is the free
    object mask of the information-filtering study: which points belong to the shape."""
    clutter = int(round(clutter_fraction * num_points))
    shape = shapes3d_cloud(label, rng, num_points - clutter, upright=upright)
    # Uniform in the ball: uniform directions, radii with density ~ r^2.
    directions = rng.normal(size=(clutter, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True).clip(min=1e-12)
    noise = directions * rng.uniform(size=(clutter, 1)) ** (1 / 3)
    order = rng.permutation(num_points)
    points = np.concatenate([shape, noise.astype(np.float32)])[order]
    on_shape = np.concatenate([np.ones(len(shape), bool), np.zeros(clutter, bool)])[order]
    return points.astype(np.float32), on_shape


# -- user files -----------------------------------------------------------------------------------------------------
def _read_off(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3), triangles (F, 3)) of an ASCII OFF mesh; polygons are fanned into triangles."""
    with open(path, encoding="ascii") as handle:
        tokens = handle.read().split()
    if not tokens or not tokens[0].startswith("OFF"):
        raise DataError(f"{path} is not an OFF file (it does not start with 'OFF').")
    # ModelNet40 has files whose first line is "OFF<V> <F> <E>", with no line break after OFF.
    header = tokens[0][3:]
    tokens = ([header] if header else []) + tokens[1:]
    vertex_count, face_count = int(tokens[0]), int(tokens[1])
    position = 3
    vertices = np.asarray(tokens[position:position + 3 * vertex_count], dtype=np.float64).reshape(vertex_count, 3)
    position += 3 * vertex_count
    faces = []
    for _ in range(face_count):
        size = int(tokens[position])
        polygon = [int(t) for t in tokens[position + 1:position + 1 + size]]
        faces += [[polygon[0], polygon[i], polygon[i + 1]] for i in range(1, size - 1)]
        position += 1 + size
    return vertices, np.asarray(faces, dtype=np.int64).reshape(-1, 3)


PLY_TYPES = {
    "char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4", "float": "f4",
    "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
    "float32": "f4", "float64": "f8",
}


def read_ply_vertices(path: str) -> dict[str, np.ndarray]:
    """The vertex properties of an ASCII or binary PLY file, name -> (V,) array in its declared type (so a reader can
    tell 8-bit colours from float ones); x, y and z are required."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise DataError(f"{path} is not a PLY file (it does not start with 'ply').")
        fmt, vertex_count, properties, in_vertex = None, 0, [], False
        while True:
            line = handle.readline()
            if not line:
                raise DataError(f"{path}: the PLY header has no end_header.")
            words = line.decode("ascii", errors="replace").split()
            if not words:
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                in_vertex = words[1] == "vertex"
                if in_vertex:
                    vertex_count = int(words[2])
            elif words[0] == "property" and in_vertex:
                if words[1] == "list":
                    raise DataError(f"{path}: list properties on vertices are not supported.")
                if words[1] not in PLY_TYPES:
                    raise DataError(f"{path}: unknown PLY property type {words[1]!r} (of {words[2]!r}).")
                properties.append((words[2], PLY_TYPES[words[1]]))
            elif words[0] == "end_header":
                break
        names = [name for name, _ in properties]
        if not {"x", "y", "z"} <= set(names):
            raise DataError(f"{path}: the PLY vertices have no x, y, z properties ({names}).")
        if fmt == "ascii":
            rows = [handle.readline().split() for _ in range(vertex_count)]
            table = np.asarray(rows, dtype=np.float64).reshape(vertex_count, len(names))
            return {name: table[:, i].astype(code) for i, (name, code) in enumerate(properties)}
        if fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(name, order + code) for name, code in properties])
            data = np.frombuffer(handle.read(dtype.itemsize * vertex_count), dtype=dtype, count=vertex_count)
            return {name: data[name].astype(code) for name, code in properties}
        raise DataError(f"{path}: unknown PLY format {fmt!r}.")


def read_point_cloud(path: str, mesh_samples: int = 2048, seed: int = 0) -> np.ndarray:
    """(N, 3 + F) float32 from .npy/.npz (an array, or the npz key points/xyz/data, first 3 columns xyz), .ply
    (vertices and their extra properties), .off (a mesh: `mesh_samples` seeded surface samples) or .txt/.xyz (rows of
    comma- or space-separated numbers, as the resampled ModelNet40)."""
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".npy":
            cloud = np.load(path, allow_pickle=False)
        elif extension == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                key = next((k for k in ("points", "xyz", "data", "pos") if k in archive.files), archive.files[0])
                cloud = archive[key]
        elif extension == ".ply":
            vertices = read_ply_vertices(path)
            order = ["x", "y", "z", *(name for name in vertices if name not in ("x", "y", "z"))]
            cloud = np.stack([vertices[name].astype(np.float64) for name in order], axis=1)
        elif extension == ".off":
            vertices, faces = _read_off(path)
            cloud = _triangle_samples(vertices, faces, mesh_samples, np.random.default_rng(seed)) if len(faces) else vertices
        elif extension in (".txt", ".xyz"):
            with open(path, encoding="ascii") as handle:
                cloud = np.asarray([line.replace(",", " ").split() for line in handle if line.strip()], dtype=np.float64)
        else:
            raise DataError(f"{path}: unsupported point-cloud extension; use one of {', '.join(POINT_EXTENSIONS)}.")
    except DataError:
        raise
    except (ValueError, OSError, IndexError, KeyError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable point cloud ({type(error).__name__}: {error}).") from error
    cloud = np.asarray(cloud, dtype=np.float32)
    if cloud.ndim != 2 or cloud.shape[1] < 3:
        raise DataError(f"{path} holds an array of shape {cloud.shape}; expected (points, 3 or more) with xyz first.")
    if len(cloud) == 0:
        raise DataError(f"{path} holds no points.")
    if not np.isfinite(cloud).all():
        raise DataError(f"{path} holds NaN or infinite values; drop or repair those points.")
    return cloud


def point_folder_dataset(root: str, seed: int = 42, validation_fraction: float = 0.1, test_fraction: float = 0.2):
    """Point clouds in class folders as a DatasetDict. Layouts: ROOT/<class>/<file>, ROOT/<split>/<class>/<file>, or
    ModelNet40's ROOT/<class>/{train,test}/<file>. Files are read now (clouds are small); xyz only."""
    import datasets

    if not os.path.isdir(root):
        raise DataError(f"{root!r} is not a directory of class folders of point clouds.")
    entries = {}  # split -> [(path, class name)]
    top = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    split_alias = {"train": "train", "test": "test", "val": "validation", "validation": "validation"}
    if top and all(d in split_alias for d in top):
        for split in top:
            for name in sorted(os.listdir(os.path.join(root, split))):
                for path in sorted(glob.glob(os.path.join(root, split, name, "*"))):
                    entries.setdefault(split_alias[split], []).append((path, name))
    else:
        for name in top:
            for path in sorted(glob.glob(os.path.join(root, name, "*")) + glob.glob(os.path.join(root, name, "*", "*"))):
                parent = os.path.basename(os.path.dirname(path))
                split = split_alias.get(parent, "train") if parent != name else "train"
                entries.setdefault(split, []).append((path, name))
    entries = {s: [(p, c) for p, c in items if p.lower().endswith(POINT_EXTENSIONS)] for s, items in entries.items()}
    classes = sorted({c for items in entries.values() for _, c in items})
    if len(classes) < 2 or not entries.get("train"):
        raise DataError(
            f"{root} has {len(classes)} class folder(s) with point-cloud files ({', '.join(POINT_EXTENSIONS)}) and "
            f"{len(entries.get('train', []))} training files; put each class's clouds in ROOT/<class>/."
        )
    features = datasets.Features({
        "points": datasets.Array2D(shape=(None, 3), dtype="float32"), "label": datasets.ClassLabel(names=classes),
    })
    splits = {
        split: datasets.Dataset.from_dict(
            {"points": [read_point_cloud(p)[:, :3] for p, _ in items], "label": [classes.index(c) for _, c in items]},
            features=features,
        )
        for split, items in entries.items() if items
    }
    splits = carve_missing_splits(datasets.DatasetDict(splits), "label", seed, validation_fraction, test_fraction)
    return splits.with_format("numpy")


def h5_point_dataset(root: str, seed: int = 42, validation_fraction: float = 0.1, test_fraction: float = 0.2):
    """The HDF5 layouts of ModelNet40 (modelnet40_ply_hdf5_2048: ply_data_{train,test}*.h5 + shape_names.txt) and
    ScanObjectNN ({training,test}_objectdataset*.h5), each file with `data` (M, N, 3+) and `label` (M,) or (M, 1)."""
    import datasets

    try:
        import h5py
    except ImportError as error:
        raise ImportError("Reading HDF5 point clouds needs h5py: pip install 'hf_frozenlm[points]'.") from error
    files = sorted(glob.glob(os.path.join(root, "**", "*.h5"), recursive=True))
    if not files:
        raise DataError(f"{root} holds no .h5 files (ModelNet40 ply_data_*.h5 or ScanObjectNN *_objectdataset*.h5).")

    def split_of(path):
        name = os.path.basename(path).lower()
        return "test" if "test" in name else "train" if "train" in name else None

    arrays = {}
    for path in files:
        split = split_of(path)
        if split is None:
            continue
        try:
            with h5py.File(path, "r") as handle:
                if "data" not in handle or "label" not in handle:
                    raise DataError(f"{path} has no `data` and `label` datasets ({list(handle.keys())}).")
                data, label = np.asarray(handle["data"], dtype=np.float32), np.asarray(handle["label"]).reshape(-1)
        except OSError as error:
            raise DataError(f"{path} is not a readable HDF5 file ({error}).") from error
        if data.ndim != 3 or data.shape[-1] < 3 or len(data) != len(label):
            raise DataError(f"{path}: `data` has shape {data.shape} and `label` {label.shape}; expected (M, N, 3 or "
                            "more) clouds and M labels.")
        if not np.isfinite(data[..., :3]).all():
            raise DataError(f"{path} holds NaN or infinite coordinates; repair or drop those clouds.")
        arrays.setdefault(split, []).append((data[..., :3], label.astype(np.int64)))
    if "train" not in arrays:
        raise DataError(f"{root}: no training file (a name containing 'train') among {files}.")
    names_file = next(iter(glob.glob(os.path.join(root, "**", "shape_names.txt"), recursive=True)), None)
    num_classes = int(max(np.concatenate([l for items in arrays.values() for _, l in items]).max() + 1, 2))
    if names_file:
        with open(names_file, encoding="utf-8") as handle:
            classes = [line.strip() for line in handle if line.strip()]
    elif num_classes <= len(SCANOBJECTNN_LABELS) and any("objectdataset" in f for f in files):
        classes = list(SCANOBJECTNN_LABELS)
    else:
        classes = [str(i) for i in range(num_classes)]
    if num_classes > len(classes):
        raise DataError(f"{root}: labels go up to {num_classes - 1} but {names_file or 'the class list'} names only "
                        f"{len(classes)} classes.")
    features = datasets.Features({
        "points": datasets.Array2D(shape=(None, 3), dtype="float32"), "label": datasets.ClassLabel(names=classes),
    })
    splits = {
        split: datasets.Dataset.from_dict(
            {"points": list(np.concatenate([d for d, _ in items])), "label": np.concatenate([l for _, l in items])},
            features=features,
        )
        for split, items in arrays.items()
    }
    splits = carve_missing_splits(datasets.DatasetDict(splits), "label", seed, validation_fraction, test_fraction)
    return splits.with_format("numpy")


# -- --dataset values -----------------------------------------------------------------------------------------------
BUILTIN = "shapes3d"
CLUTTERED = "shapes3d-cluttered"
CLUTTER_FRACTION = 0.25  # of each cloud's points, in the cluttered builtin
DATASET_HELP = (
    "shapes3d (builtin: 6 generated shapes, 100 clouds each), shapes3d-cluttered (the same with a quarter of each "
    "cloud's points scattered around the shape, and their on_shape mask), pointfolder:PATH "
    "(.npy/.npz/.ply/.off/.txt/.xyz files in PATH/<class>/, PATH/<split>/<class>/ or ModelNet40's "
    "PATH/<class>/{train,test}/) or h5:PATH (ModelNet40's ply_data_*.h5 + shape_names.txt, or ScanObjectNN's "
    "*_objectdataset*.h5)"
)
# Points per cloud the model is given: the builtin's tiny trunk groups 16 x 16 = 256; real data as Point-BERT (1024).
BUILTIN_NUM_POINTS = 256
REAL_NUM_POINTS = 1024


def load_point_cloud_data(data_args):
    """The `--dataset` of point-cloud classification as TaskData (`info["num_points"]`: points per cloud to give the
    model). `--max_train_samples` / `--max_eval_samples` truncate the splits."""
    from ..tasks.base import TaskData

    name = data_args.dataset or BUILTIN
    seed, validation, test = data_args.split_seed, data_args.validation_fraction, data_args.test_fraction
    if name == BUILTIN:
        splits = shapes3d_dataset(seed=seed, validation_fraction=validation, test_fraction=test)
    elif name == CLUTTERED:
        splits = shapes3d_dataset(seed=seed, validation_fraction=validation, test_fraction=test,
                                  clutter_fraction=CLUTTER_FRACTION)
    elif name.startswith("pointfolder:"):
        splits = point_folder_dataset(name.split(":", 1)[1], seed, validation, test)
    elif name.startswith("h5:"):
        splits = h5_point_dataset(name.split(":", 1)[1], seed, validation, test)
    else:
        raise DataError(f"--dataset {name!r}: point-cloud-classification takes {DATASET_HELP}.")
    for split in ("train", "validation", "test"):
        if len(splits[split]) == 0:
            raise DataError(f"{name}: the {split} split is empty; add clouds or change the split fractions.")
    if data_args.max_train_samples:
        splits["train"] = splits["train"].select(range(min(data_args.max_train_samples, len(splits["train"]))))
    if data_args.max_eval_samples:
        for split in ("validation", "test"):
            splits[split] = splits[split].select(range(min(data_args.max_eval_samples, len(splits[split]))))
    id2label = dict(enumerate(splits["train"].features["label"].names))
    num_points = BUILTIN_NUM_POINTS if name in (BUILTIN, CLUTTERED) else REAL_NUM_POINTS
    return TaskData(splits=splits, name=name, id2label=id2label, info={"num_points": num_points})
