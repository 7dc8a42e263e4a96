"""Information filtering on point clouds: the cluttered builtin and its free object mask, the token masks of the
model's own groups (checked against a brute-force reference), and the study's short mode end to end."""

import csv
from pathlib import Path

import numpy as np
import pytest

from hf_frozenlm.analysis import ablation_report, cluttered_points_study
from hf_frozenlm.commands import ablate
from hf_frozenlm.data.points import cluttered_shapes3d_cloud, shapes3d_dataset

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cluttered_clouds_carry_their_mask():
    rng = np.random.default_rng(0)
    points, on_shape = cluttered_shapes3d_cloud(1, rng, num_points=400, clutter_fraction=0.25)
    assert points.shape == (400, 3) and points.dtype == np.float32 and on_shape.sum() == 300
    assert np.linalg.norm(points[~on_shape], axis=1).max() <= 1.0  # clutter fills the unit ball around the shape
    # Clutter is shuffled in among the shape's points, not appended.
    assert 0 < on_shape[:100].sum() < 100
    data = shapes3d_dataset(clouds_per_class=5, num_points=64, clutter_fraction=0.25)
    example = data["train"][0]
    assert set(data["train"].column_names) == {"points", "on_shape", "label"}
    assert example["points"].shape == (64, 3) and example["on_shape"].sum() == 48


def _brute_force_masks(model, processor, examples, on_shape):
    """Token masks without the labelled feature extractor: which rows of each cloud the model sees is recovered by
    matching its points to the cloud's (the extractor normalises the subset it picked, so the match is refined until
    normalising the matched rows gives exactly the points seen); a token takes its centre's label."""
    import torch

    from hf_frozenlm.modeling.frozenlm_processing import normalize_cloud
    from hf_frozenlm.modeling.modeling_pointbert_llama import farthest_point_sample

    seen = processor([e["points"] for e in examples], return_tensors="pt")["point_values"].float()
    result = []
    for cloud, labels, points in zip(examples, on_shape, seen):
        original = np.asarray(cloud["points"], dtype=np.float64)
        seen_points = points.double().numpy()
        rows = np.arange(len(original))
        for _ in range(5):
            # Undo the normalisation of the current guess, then take each seen point's nearest original point.
            guess = original[rows]
            centre, scale = guess.mean(0), np.linalg.norm(guess - guess.mean(0), axis=1).max()
            restored = seen_points * scale + centre
            rows = np.argmin(((restored[:, None, :] - original[None]) ** 2).sum(-1), axis=1)
        assert np.allclose(normalize_cloud(original[rows]), seen_points, atol=1e-5)  # exactly the rows seen
        centres = farthest_point_sample(points[None], model.base_model.embeddings.num_groups)[0].numpy()
        result.append(np.asarray(labels)[rows][centres])
    return torch.tensor(np.stack(result))


def test_group_masks_match_a_brute_force_reference(tiny_point_model):
    model, processor = tiny_point_model
    examples, on_shape = cluttered_points_study.held_out_clouds(6)
    masks = cluttered_points_study.group_masks(model, processor, examples, on_shape)
    assert masks.shape == (6, model.config.num_groups) and masks.dtype.is_floating_point is False
    assert (masks == _brute_force_masks(model, processor, examples, on_shape)).all()
    # Both kinds of token occur, in similar numbers: farthest-point sampling also picks clutter points as centres.
    assert 0.2 < masks.float().mean() < 0.8
    density = cluttered_points_study.density_maps(model, processor, examples)
    assert density.shape == masks.shape and float(density.min()) == 0.0 and float(density.max()) == 1.0


@pytest.fixture(scope="module")
def tiny_point_model():
    """The builtin's trunk preset untrained (the masks depend on its grouping, not on its weights)."""
    import torch

    from hf_frozenlm.data.points import BUILTIN_NUM_POINTS
    from hf_frozenlm.modeling import PointBertLlamaForPointCloudClassification, PointCloudFeatureExtractor

    torch.manual_seed(0)
    model = PointBertLlamaForPointCloudClassification.from_parts("pointbert-tiny", None, variant="none", num_labels=6)
    return model.eval(), PointCloudFeatureExtractor(num_points=BUILTIN_NUM_POINTS)


@pytest.fixture(scope="module")
def quick_points_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("points-study")
    out, runs = root / "out", root / "runs"
    assert ablate.main(["--quick", "--task", "point-cloud-classification", "--arms", "none", "llm", "--out", str(out),
                        "--runs_dir", str(runs)]) == 0
    return out, runs


def test_quick_study_scores_every_stage_against_the_references(quick_points_study):
    out, runs = quick_points_study
    run_rows = _rows(out / "miou_points_runs.csv")
    assert [(r["arm"], r["seed"]) for r in run_rows] == [("none", "0"), ("llm", "0")]
    assert all("--dataset shapes3d-cluttered" in r["train_command"] for r in run_rows)
    assert all(r["command"].startswith("hf-frozenlm ablate --quick") for r in run_rows)
    miou = _rows(out / "miou_points.csv")
    stages = {(r["arm"], r["stage"]) for r in miou}
    assert {("none", "trunk"), ("llm", "trunk"), ("llm", "llm_out"), ("llm", "llm_cls"),
            (cluttered_points_study.DENSITY_REFERENCE, "groups"),
            ("random maps (chance)", "uniform noise")} <= stages
    assert all(0.0 <= float(r["miou"]) <= 1.0 and int(r["images"]) == 32 for r in miou)
    report = (out / "README.md").read_text()
    block = ablation_report.generated_blocks(out)["miou-points"]
    assert block.strip() in report and "| llm | llm_out |" in block and "group density (no model)" in block
    # The main study's rows are there too, and its run folders lost their weights; the scored models keep theirs.
    assert {r["task"] for r in _rows(out / "ablation_runs.csv")} == {"point-cloud-classification"}
    assert (runs / "cluttered-points" / "llm-seed0" / "model.safetensors").exists()


def test_committed_points_miou_is_what_ablate_runs(tmp_path):
    """The committed cluttered-points runs are the ones `hf-frozenlm ablate --task point-cloud-classification` plans
    (every arm on the five seeds, train command for train command), and every one of them is scored."""
    from hf_frozenlm.analysis import ablation

    runs = _rows(RESULTS / "miou_points_runs.csv")
    argv = ["--task", "point-cloud-classification"]
    base = ablation.apply_study_defaults(
        ablation.parse_study_arguments(argv, output_dir=str(tmp_path)), argv)
    cluttered = ablation.parse_study_arguments([*base.argv, "--dataset", "shapes3d-cluttered"],
                                               output_dir=str(tmp_path))
    planned = ablation.plan_runs(cluttered, list(cluttered_points_study.ARMS), list(range(ablation.DEFAULT_SEEDS)),
                                 Path("runs/ablate/cluttered-points"), skip=set())
    assert {(r["arm"], int(r["seed"])): r["train_command"] for r in runs} == {run.key: run.command for run in planned}
    miou = _rows(RESULTS / "miou_points.csv")
    assert {(r["arm"], int(r["seed"])) for r in miou if r["seed"]} == {run.key for run in planned}
    assert all(int(r["images"]) == cluttered_points_study.SCORED_CLOUDS for r in miou)
