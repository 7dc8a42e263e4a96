"""Information filtering on point clouds (paper section 4, beyond images): does the frozen block single out the
points that belong to the object?

The builtin shapes with a quarter of every cloud's points scattered uniformly in the ball around the shape
(`shapes3d-cluttered`, data/points.py) carry their object mask for free: each point is on the shape or clutter.
Point-BERT's tokens are groups of nearest points around farthest-point samples, and farthest-point sampling picks
clutter points as centres too (46 % of the builtin trunk's 16 centres), so some tokens are the object and some are
clutter, as patches are on an image. A token is object when the point it is centred on lies on the shape.

1. the arms (per seed): `none` and `llm` trained from scratch on the cluttered builtin with the point-cloud task's
   study budget (every arm alike);
2. every stage's token maps of held-out cluttered clouds (another generator seed, never trained on) are scored
   against those token masks (best threshold per cloud, the paper's protocol), beside uniform noise and a map
   without a model: how densely packed each group's points are (clutter is sparse, the surface dense).

Writes OUT/miou_points_runs.csv (one row per run, with provenance) and OUT/miou_points.csv (one row per run x stage
x map kind).
"""

from __future__ import annotations

from pathlib import Path

from .ablation import FinishedRun, environment, execute_runs, parse_study_arguments, plan_runs, read_csv, write_csv
from ..data.points import CLUTTERED
from .maps import RANDOM_REFERENCE, STAGES

ARMS = ("none", "llm")
SCORED_CLOUDS = 256
SCORED_SEED = 1000  # the held-out clouds' generator seed; the dataset's own clouds come from the split seed
DENSITY_REFERENCE = "group density (no model)"
RUN_FIELDS = ["arm", "seed", "test_accuracy", "val_accuracy", "epochs", "wall_s", "precision", "hf_frozenlm", "torch",
              "transformers", "python", "cpu", "git_commit", "git_dirty", "command", "train_command"]
MIOU_FIELDS = ["model", "arm", "seed", "test_accuracy", "stage", "kind", "miou", "images"]


def held_out_clouds(count: int, seed: int = SCORED_SEED) -> tuple[list[dict], list]:
    """(examples {points, label}, on_shape per cloud): cluttered clouds of every class in turn, from their own seed."""
    import numpy as np

    from ..data.points import SHAPES3D_LABELS, cluttered_shapes3d_cloud

    rng = np.random.default_rng(seed)
    clouds = [cluttered_shapes3d_cloud(index % len(SHAPES3D_LABELS), rng) for index in range(count)]
    examples = [{"points": points, "label": index % len(SHAPES3D_LABELS)} for index, (points, _) in enumerate(clouds)]
    return examples, [on_shape for _, on_shape in clouds]


def group_masks(model, processor, examples: list[dict], on_shape: list) -> "torch.Tensor":
    """(N, groups) bool: whether the point each token is centred on (its farthest-point sample, where its position
    embedding puts it) lies on the shape.

    The centre, not a vote of the group's points: a group is the centre's nearest points, and on 256 points with a
    quarter of clutter even a centre in empty space gathers mostly surface points (94 % of groups held a majority of
    shape points, so a map marking every token scored 0.85), while 46 % of centres are clutter points.

    The model's feature extractor picks which points of a cloud it sees (fixed per cloud size and seed); a copy that
    also carries `on_shape` as a point feature picks the same rows, so every point the model sees keeps its label.
    The centres are the model's own farthest-point samples."""
    import numpy as np
    import torch

    from ..modeling import PointCloudFeatureExtractor
    from ..modeling.modeling_pointbert_llama import farthest_point_sample

    labelled = PointCloudFeatureExtractor(num_points=processor.num_points, point_feature_size=1,
                                          normalize=processor.normalize, seed=processor.seed)
    clouds = [np.concatenate([np.asarray(e["points"]), np.asarray(m, np.float32)[:, None]], axis=1)
              for e, m in zip(examples, on_shape)]
    batch = labelled(clouds, return_tensors="pt")
    seen = processor([np.asarray(e["points"]) for e in examples], return_tensors="pt")["point_values"]
    if not torch.equal(batch["point_values"], seen):
        raise RuntimeError("The labelled copy of the feature extractor picked other points than the model's.")
    points, labels = batch["point_values"].float(), batch["point_features"][..., 0]  # (N, P, 3), (N, P)
    centres = farthest_point_sample(points, model.base_model.embeddings.num_groups)  # (N, G) indices
    return torch.gather(labels, 1, centres) > 0.5


def density_maps(model, processor, examples: list[dict]) -> "torch.Tensor":
    """(N, groups) in [0, 1] per cloud: 1 for the group whose points lie closest to its centre. No model weights are
    involved, only the grouping: the low-level cue the learned maps should beat."""
    import numpy as np

    from ..modeling.modeling_pointbert_llama import farthest_point_sample, gather_points, knn_indices

    points = processor([np.asarray(e["points"]) for e in examples], return_tensors="pt")["point_values"].float()
    embeddings = model.base_model.embeddings
    centres = gather_points(points, farthest_point_sample(points, embeddings.num_groups))
    groups = gather_points(points, knn_indices(centres, points, embeddings.group_size))  # (N, G, k, 3)
    spread = (groups - centres[:, :, None, :]).norm(dim=-1).mean(-1)  # (N, G)
    low, high = spread.min(1, keepdim=True).values, spread.max(1, keepdim=True).values
    return (high - spread) / (high - low).clamp(min=1e-12)


def as_rows(maps) -> "torch.Tensor":
    """(N, G) set maps -> (N, 1, G): `pseudo_mask_iou` reads (N, H, W) grids."""
    return maps[:, None, :]


def score_run(run_dir: str, label: str, examples: list[dict], on_shape: list):
    """(mIoU rows of every stage x kind and the block's CLS attention, token masks, the loaded model and processor)."""
    from ..training.loading import load_trained_model
    from .maps import miou_rows
    from .report import analyse_model

    task, model, processor = load_trained_model(run_dir)
    activations, attention, _pixels, _grids = analyse_model(task, model, processor, examples, batch_size=64,
                                                           kinds=("magnitude", "frequency"))
    masks = as_rows(group_masks(model, processor, examples, on_shape))
    activations = {kind: {stage: as_rows(maps) for stage, maps in by.items()} for kind, by in activations.items()}
    attention = {name: as_rows(maps) for name, maps in attention.items()}
    return miou_rows(label, activations, attention, masks), masks, model, processor


def run_cluttered_points_study(base, seeds: list[int], out: Path, runs_dir: Path, command: str, quick: bool = False,
                               resume: bool = False, jobs: int = 1, log=print) -> dict:
    """Train `none` and `llm` per seed on the cluttered builtin, then score every stage's maps of every model."""
    import torch

    from .maps import miou_rows

    runs_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env = environment(outputs=out)
    cluttered = parse_study_arguments([*base.argv, "--dataset", CLUTTERED], output_dir=str(runs_dir / "unused"))
    runs_csv = out / "miou_points_runs.csv"
    planned_runs = plan_runs(cluttered, list(ARMS), seeds, runs_dir, skip=set())
    planned = {run.key: run.command for run in planned_runs}
    # A kept row must be the run the study would make now (same train command) and still have its weights.
    run_rows = [r for r in (read_csv(runs_csv) if resume else [])
                if planned.get((r["arm"], int(r["seed"]))) == r["train_command"]
                and Path(runs_dir, f"{r['arm']}-seed{r['seed']}", "model.safetensors").exists()]
    done = {(r["arm"], int(r["seed"])) for r in run_rows}

    def record(result: FinishedRun) -> None:
        arm, seed = result.run.key
        metrics = result.metrics
        run_rows[:] = [r for r in run_rows if (r["arm"], int(r["seed"])) != result.run.key]
        run_rows.append(dict(
            arm=arm, seed=seed, test_accuracy=f"{metrics['test']['accuracy']:.6f}",
            val_accuracy=f"{metrics['validation']['accuracy']:.6f}",
            epochs=f"{metrics['train'].get('epoch', float('nan')):g}", wall_s=f"{result.wall_s:.1f}",
            precision="bf16 autocast" if result.run.arguments.training.bf16 else "fp32", command=command,
            train_command=result.run.command, **env))
        order = {run.key: index for index, run in enumerate(planned_runs)}
        run_rows.sort(key=lambda r: order.get((r["arm"], int(r["seed"])), len(order)))
        write_csv(run_rows, runs_csv, RUN_FIELDS)
        log(f"[ablate] cluttered points {arm} seed {seed}: test accuracy {metrics['test']['accuracy']:.4f}, "
            f"{result.wall_s:.0f} s")

    execute_runs([run for run in planned_runs if run.key not in done], jobs, runs_dir / "logs", record, log=log)

    log("[ablate] cluttered points: scoring the token maps")
    examples, on_shape = held_out_clouds(32 if quick else SCORED_CLOUDS)
    accuracy = {(r["arm"], int(r["seed"])): float(r["test_accuracy"]) for r in run_rows}
    miou, masks, model, processor = [], None, None, None
    for run in planned_runs:
        arm, seed = run.key
        rows, masks, model, processor = score_run(run.output_dir, f"{arm} seed {seed}", examples, on_shape)
        miou += [dict(row, arm=arm, seed=seed, test_accuracy=f"{accuracy[(arm, seed)]:.6f}") for row in rows]
    # The references need only the grouping, which every model of the study shares (same trunk preset, same
    # sampling): the last model's serves.
    noise = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    references = (miou_rows(RANDOM_REFERENCE, {"-": {"uniform noise": noise}}, {}, masks)
                  + miou_rows(DENSITY_REFERENCE, {"-": {"groups": as_rows(density_maps(model, processor, examples))}},
                              {}, masks))
    miou += [dict(row, arm=row["model"], seed="") for row in references]
    write_csv([dict(row, miou=f"{float(row['miou']):.4f}") for row in miou], out / "miou_points.csv", MIOU_FIELDS)
    return dict(runs=runs_csv, miou=out / "miou_points.csv")


# -- the table ---------------------------------------------------------------------------------------------------
def miou_markdown(rows: list[dict], run_rows: list[dict]) -> str:
    """The arms' accuracies, then `ablation_report.miou_table` of their maps."""
    from .ablation_report import accuracy_line, miou_table

    epochs = sorted({r["epochs"] for r in run_rows})
    lines = [accuracy_line(run_rows, arm, f"({', '.join(epochs)} epochs): test accuracy on cluttered clouds")
             for arm in ARMS]
    clouds = next((r["images"] for r in rows if r.get("images")), "?")
    footnote = (f"mIoU over {clouds} held-out cluttered clouds (a token is object when the point its group is centred "
                "on lies on the shape), mean ± std over seeds; "
                "Δ: paired difference on the same seed (mean ± std, seeds where the stage is higher, paired t-test "
                "p). Group density: each group's points' mean distance to its centre, inverted; the random maps are "
                "one draw of uniform noise per cloud. Both references are shown in both columns.")
    table = miou_table(rows, ARMS, STAGES, (DENSITY_REFERENCE, RANDOM_REFERENCE), footnote)
    return "\n".join(line for line in lines if line) + "\n\n" + table
