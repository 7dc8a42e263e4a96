"""`hf-frozenlm ablate`: the short mode end to end (in this process and as --jobs processes, --resume), the
statistics, the report's blocks, and the committed results' consistency with their CSVs and with the defaults."""

import builtins
import csv
import json
import re
from pathlib import Path

import pytest

from hf_frozenlm.analysis import ablation, ablation_report, masked_digits_study
from hf_frozenlm.commands import ablate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    """A short image study (three arms, with the masked-digits part) and then a short video study in two
    single-threaded processes, both into the same OUT."""
    root = tmp_path_factory.mktemp("study")
    out, runs = root / "out", root / "runs"
    assert ablate.main(["--quick", "--arms", "none", "llm", "llm-middle", "--out", str(out), "--runs_dir",
                        str(runs)]) == 0
    image_rows = _rows(out / "ablation_runs.csv")
    assert ablate.main(["--quick", "--task", "video-classification", "--arms", "none", "llm", "--jobs", "2", "--out",
                        str(out), "--runs_dir", str(runs)]) == 0
    return out, runs, image_rows


def test_quick_study_rows_curves_and_report(quick_study):
    out, runs, _ = quick_study
    rows = ablation.read_runs_csv(out / "ablation_runs.csv")
    assert [(r["task"], r["arm"], r["seed"], r["llm_layers"]) for r in rows] == [
        ("image-classification", "none", "0", ""), ("image-classification", "llm", "0", "-1"),
        ("image-classification", "llm-middle", "0", "15"),
        ("video-classification", "none", "0", ""), ("video-classification", "llm", "0", "-1")]
    for row in rows:
        assert row["metric"] == "accuracy" and row["greater_is_better"] == "True"
        assert 0.0 <= float(row["test_score"]) <= 1.0 and row["budget"] == "2 steps" and row["threads"] == "1"
        assert row["command"].startswith("hf-frozenlm ablate --quick")
        assert f"--seed 0 --output_dir {runs}/{row['task']}/{row['arm']}-seed0" in row["train_command"]
        assert "accuracy" in json.loads(row["test_metrics"]) and re.fullmatch(r"[0-9a-f]{40}", row["git_commit"])
    # Every run has its validation curve (one point per evaluation, the final evaluation not repeated).
    curves = _rows(out / "ablation_curves.csv")
    assert {(c["task"], c["arm"]) for c in curves} == {(r["task"], r["arm"]) for r in rows}
    assert len(curves) == len({(c["task"], c["arm"], c["seed"], c["epoch"]) for c in curves})
    # Run folders keep metrics, not weights; the masked-digits models stay whole for `hf-frozenlm analyze`.
    assert not list((runs / "image-classification").glob("*-seed0/model.safetensors"))
    assert (runs / "masked-digits" / "llm-seed0" / "model.safetensors").exists()
    assert (runs / "masked-digits" / "cluttered-new-trunk" / "config.json").exists()
    # The report: every block generated from the CSVs, both plots.
    report = (out / "README.md").read_text()
    for name, content in ablation_report.generated_blocks(out).items():
        assert content.strip() in report, name
    assert ablation_report.markdown_table(ablation_report.of_task(rows, "video-classification")) in report
    assert (out / "ablation.png").stat().st_size > 1000 and (out / "ablation_curves.png").stat().st_size > 1000


def test_quick_study_miou_part(quick_study):
    out, runs_root, _ = quick_study
    runs_dir = runs_root / "masked-digits"
    runs = _rows(out / "miou_runs.csv")
    assert [(r["stage"], r["arm"]) for r in runs] == [
        ("clean", "none"), ("cluttered", "none"), ("cluttered-crops", "none"), ("cluttered-new", "none"),
        ("arms", "none"), ("arms", "llm")]
    # The curriculum: each stage starts from the previous stage's trunk, the arms from the last one.
    assert "--trunk " not in runs[0]["train_command"]
    assert f"--trunk {runs_dir / 'clean-trunk'}" in runs[1]["train_command"]
    assert f"--trunk {runs_dir / 'cluttered-trunk'}" in runs[2]["train_command"]
    assert f"--trunk {runs_dir / 'cluttered-crops-trunk'}" in runs[3]["train_command"]
    assert all(f"--trunk {runs_dir / 'cluttered-new-trunk'}" in r["train_command"] for r in runs[4:])
    assert all("cluttered-images-200-seed2" in r["train_command"] for r in runs[3:])
    assert "--hflip 0" in runs[2]["train_command"] and "--hflip 0" in runs[3]["train_command"]
    miou = _rows(out / "miou.csv")
    stages = {(r["arm"], r["stage"]) for r in miou}
    assert {("none", "trunk"), ("llm", "trunk"), ("llm", "llm_out"), ("llm", "llm_cls"),
            ("input pixels (no model)", "patches"), ("random maps (chance)", "uniform noise")} <= stages
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in miou)
    table = masked_digits_study.miou_markdown(miou, runs)
    assert "| llm | llm_out |" in table and "random maps (chance)" in table


def test_resume_keeps_finished_runs_and_other_tasks(quick_study, tmp_path):
    out, runs, image_rows = quick_study
    resumed = tmp_path / "out"
    resumed.mkdir()
    for name in ("ablation_runs.csv", "ablation_curves.csv"):
        (resumed / name).write_text((out / name).read_text())
    # With --jobs 2 the two missing runs train in two processes: the path the committed cluttered rows took.
    assert ablate.main(["--quick", "--arms", "none", "llm", "--seed_list", "0", "1", "--resume", "--no_miou",
                        "--jobs", "2", "--out", str(resumed), "--runs_dir", str(tmp_path / "runs")]) == 0
    rows = _rows(resumed / "ablation_runs.csv")
    image = [r for r in rows if r["task"] == "image-classification"]
    # Seed 0's runs are kept as they were (same row, same timing); only seed 1 was trained; the arm outside --arms
    # and the other task's rows stay.
    assert [(r["arm"], r["seed"]) for r in image] == [("none", "0"), ("none", "1"), ("llm", "0"), ("llm", "1"),
                                                      ("llm-middle", "0")]
    kept = {(r["arm"], r["seed"]): r for r in image_rows}
    assert all(r == kept[(r["arm"], r["seed"])] for r in image if r["seed"] == "0")
    assert [r["arm"] for r in rows if r["task"] == "video-classification"] == ["none", "llm"]
    assert not (tmp_path / "runs" / "image-classification" / "none-seed0").exists()


def test_options_the_study_sets_are_refused(capsys):
    from hf_frozenlm.cli import main

    assert main(["ablate", "--quick", "--variant", "mlp"]) == 2
    assert "the study sets these per run" in capsys.readouterr().err
    assert main(["ablate", "--quick", "--no_such_training_option", "1"]) == 2  # refused before any run
    assert "--no_such_training_option" in capsys.readouterr().err
    assert main(["ablate", "--quick", "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err


def test_study_budget_arm_arguments_and_layer_resolution(tmp_path):
    from hf_frozenlm.training import parse_train_arguments

    argv = ["--task", "motion-forecasting", "--max_steps", "5", "--learning_rate", "3e-4"]
    base = ablation.apply_study_defaults(parse_train_arguments([*argv, "--output_dir", str(tmp_path)]), argv)
    # A given step budget wins over the study's epochs; the study's other options apply and are recorded.
    assert ablation.describe_budget(base.training) == "5 steps" and base.training.eval_strategy == "epoch"
    assert base.training.learning_rate == 3e-4 and base.argv[:len(argv)] == argv
    assert "--num_train_epochs" not in base.argv and base.argv[len(argv):][:2] == ["--eval_strategy", "epoch"]
    # Without a budget, motion forecasting trains the study's longer one; image classification its own recipe.
    motion = ablation.apply_study_defaults(parse_train_arguments(
        ["--task", "motion-forecasting", "--output_dir", str(tmp_path)]), ["--task", "motion-forecasting"])
    assert ablation.describe_budget(motion.training) == "300 epochs" and "--num_train_epochs" in motion.argv
    images = ablation.apply_study_defaults(parse_train_arguments(["--output_dir", str(tmp_path)]), [])
    assert ablation.describe_budget(images.training) == "10 epochs"
    arm = ablation.arm_arguments(base, ablation.ARM_BY_NAME["llm-last2"], [-2, -1], 3, str(tmp_path / "run"))
    assert (arm.model.variant, arm.model.llm_layers, arm.training.seed) == ("llm", [-2, -1], 3)
    assert arm.training.output_dir == str(tmp_path / "run") and base.training.seed == 42  # the base is untouched
    # The command recorded for the run is the one that reproduces it.
    assert arm.argv == [*base.argv, "--variant", "llm", "--seed", "3", "--output_dir", str(tmp_path / "run"),
                        "--llm_layers", "-2", "-1"]
    assert [ablation.resolve_layers(s, 30) for s in ("first", "middle", "last", "last2")] == [[0], [15], [-1], [-2, -1]]


def test_paired_test_t_and_sign_fallback(monkeypatch):
    from scipy import stats

    diffs = [0.01, 0.02, -0.005, 0.015, 0.03]
    name, p = ablation_report.paired_test(diffs)
    assert name == "paired t-test" and p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    name, p = ablation_report.paired_test(diffs)
    # 4 of 5 positive: two-sided exact binomial p = 2 * (1 + 5) / 32.
    assert name == "sign test" and p == pytest.approx(12 / 32)
    assert ablation_report.paired_test([0.1])[0].startswith("n/a")


def test_summary_pairs_by_seed_and_metric_direction():
    rows = [dict(task="image-classification", arm=a, seed=s, llm_layers="", metric="accuracy", greater_is_better="True",
                 test_score=t, val_score=t, wall_s=1.0) for a, s, t in
            [("none", 0, 0.80), ("none", 1, 0.90), ("llm", 1, 0.95), ("llm", 0, 0.82)]]
    llm = ablation_report.summarize(rows)[1]
    assert llm["arm"] == "llm" and llm["seeds"] == [0, 1]
    assert llm["diff"][0] == pytest.approx(0.035) and llm["wins"] == (2, 2)
    # A metric where lower is better (motion's minADE): "better" means a lower error than none's.
    errors = [dict(row, task="motion-forecasting", metric="minADE", greater_is_better="False") for row in rows]
    assert ablation_report.summarize(errors)[1]["wins"] == (0, 2)
    assert "Lower minADE is better" in ablation_report.markdown_table(errors)


def test_convergence_reads_the_curve_in_the_metric_direction():
    def curve(task, metric, values):
        return [dict(task=task, arm="none", seed="0", epoch=str(e + 1), metric=metric, val_score=str(v))
                for e, v in enumerate(values)]

    images, motion, retrieval = "image-classification", "motion-forecasting", "image-text-retrieval"
    rising = ablation_report.convergence(curve(images, "accuracy", [0.2, 0.5, 0.7, 0.8]), images)
    assert rising["last_quarter_gain"] == pytest.approx(0.1) and rising["best_epoch"] == 4
    # minADE and validation loss fall as models get better: a fall is a gain.
    falling = ablation_report.convergence(curve(motion, "minADE", [3.0, 2.0, 1.0, 0.9]), motion)
    assert falling["last_quarter_gain"] == pytest.approx(0.1) and falling["best_epoch"] == 4
    loss = ablation_report.convergence(curve(retrieval, "loss", [1.0, 0.6, 0.5, 0.55]), retrieval)
    assert loss["last_quarter_gain"] == pytest.approx(-0.05) and loss["best_epoch"] == 3


def test_generated_blocks_replace_only_their_content():
    start, end = ablation_report._marker("cross-task")
    text = f"# Title\n\nHand-written reading.\n\n{start}\nold table\n{end}\n\nMore reading.\n"
    updated = ablation_report.update_generated(text, {"cross-task": "new table\n", "budgets": "budget table\n"})
    assert "old table" not in updated and f"{start}\nnew table\n{end}" in updated
    assert "Hand-written reading." in updated and "More reading." in updated
    assert "## budgets" in updated and "budget table" in updated  # a block the file lacked is appended


# -- the committed study ---------------------------------------------------------------------------------------
def test_committed_results_match_their_csvs():
    """results/README.md's tables are recomputed from the committed CSVs, and the README links them."""
    report = (RESULTS / "README.md").read_text()
    blocks = ablation_report.generated_blocks(RESULTS)
    assert {"cross-task", "budgets", "miou"} <= set(blocks)
    for name, content in blocks.items():
        start, end = ablation_report._marker(name)
        assert f"{start}\n{content.rstrip()}\n{end}" in report, f"results/README.md block {name!r} is stale"
    assert (RESULTS / "ablation.png").exists() and (RESULTS / "ablation_curves.png").exists()
    assert "results/README.md" in (ROOT / "README.md").read_text()


def test_committed_study_covers_every_task_with_paired_seeds():
    rows = ablation.read_runs_csv(RESULTS / "ablation_runs.csv")
    from hf_frozenlm.tasks import TASK_NAMES

    assert {r["task"] for r in rows} == set(TASK_NAMES)
    with_controls = 0
    for task in TASK_NAMES:
        task_rows = [r for r in rows if r["task"] == task]
        seeds = {}
        for row in task_rows:
            seeds.setdefault(row["arm"], set()).add(int(row["seed"]))
            assert row["torch"] and row["transformers"] and row["hf_frozenlm"] and row["cpu"]
            assert row["command"].startswith("hf-frozenlm ablate") and f"--task {task}" in row["command"]
            assert row["train_command"].startswith("hf-frozenlm train")
        # The task's default arms, every one on the same five seeds, so every difference is paired.
        assert tuple(a for a in ablation.DEFAULT_ARMS[task]) == tuple(a.name for a in ablation.ARMS if a.name in seeds)
        assert all(s == set(range(ablation.DEFAULT_SEEDS)) for s in seeds.values())
        with_controls += {"mlp", "random-llm"} <= set(seeds)
    assert with_controls >= 4 and {"mlp", "random-llm"} <= set(ablation.DEFAULT_ARMS["image-classification"])
    curves = _rows(RESULTS / "ablation_curves.csv")
    assert {(c["task"], c["arm"], c["seed"]) for c in curves} == {(r["task"], r["arm"], r["seed"]) for r in rows}


def test_committed_rows_are_what_ablate_with_no_options_runs(tmp_path):
    """`hf-frozenlm ablate --task T` plans exactly the committed runs: same arms, seeds and train commands (the run
    folders aside)."""
    from hf_frozenlm.training import parse_train_arguments

    rows = ablation.read_runs_csv(RESULTS / "ablation_runs.csv")
    for task in {r["task"] for r in rows}:
        argv = ["--task", task]
        base = ablation.apply_study_defaults(parse_train_arguments([*argv, "--output_dir", str(tmp_path)]), argv)
        planned = ablation.plan_runs(base, list(ablation.DEFAULT_ARMS[task]), list(range(ablation.DEFAULT_SEEDS)),
                                     Path("runs/ablate") / task, skip=set())
        commands = {run.key: run.command for run in planned}
        # Runs made in their own process may record --overwrite_output_dir, which the study adds there (it owns its
        # run folders); it changes nothing in the run.
        committed = {(r["arm"], int(r["seed"])): r["train_command"].replace(" --overwrite_output_dir", "")
                     for r in rows if r["task"] == task}
        assert commands == committed, task


def test_committed_miou_comes_from_models_that_learned():
    runs = _rows(RESULTS / "miou_runs.csv")
    arms = [r for r in runs if r["stage"] == "arms"]
    assert sorted((r["arm"], int(r["seed"])) for r in arms) == sorted(
        (arm, seed) for arm in masked_digits_study.ARMS for seed in range(ablation.DEFAULT_SEEDS))
    assert all(float(r["test_accuracy"]) >= masked_digits_study.ACCURACY_BAR for r in arms)
    assert [r["stage"] for r in runs if r["stage"] != "arms"] == [s.name for s in masked_digits_study.CURRICULUM]


def test_edited_files_lists_code_edits_but_not_the_studys_own_outputs(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "results" / "ablation_runs.csv").write_text("task\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    assert ablation.edited_files(tmp_path) == []
    (tmp_path / "results" / "ablation_runs.csv").write_text("task\nimage\n")
    (tmp_path / "untracked.py").write_text("")
    assert ablation.edited_files(tmp_path) == ["results/ablation_runs.csv"]
    assert ablation.edited_files(tmp_path, outputs=tmp_path / "results") == []
    (tmp_path / "code.py").write_text("a = 2\n")
    assert ablation.edited_files(tmp_path, outputs=tmp_path / "results") == ["code.py"]
