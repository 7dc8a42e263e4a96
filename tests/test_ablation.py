"""`hf-frozenlm ablate`: the short mode end to end, the statistics, and the committed results' consistency."""

import builtins
import csv
import re
from pathlib import Path

import pytest

from hf_frozenlm.analysis import ablation
from hf_frozenlm.commands import ablate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def test_quick_study_runs_end_to_end(tmp_path):
    """Short mode (one seed, 2 steps per run): CSV, table, plot and mIoU come out and agree with each other."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    # Three arms keep the test short; they cover the plain trunk, a frozen layer and a layer resolved from the depth.
    status = ablate.main(["--quick", "--arms", "none", "llm", "llm-middle", "--out", str(out), "--runs_dir", str(runs)])
    assert status == 0
    rows = ablation.read_runs_csv(out / "ablation_runs.csv")
    assert [(r["arm"], r["seed"], r["llm_layers"]) for r in rows] == [("none", "0", ""), ("llm", "0", "-1"),
                                                                       ("llm-middle", "0", "15")]
    for row in rows:
        assert row["metric"] == "accuracy" and row["task"] == "image-classification"
        assert 0.0 <= float(row["test_score"]) <= 1.0 and row["budget"] == "2 steps"
        assert row["command"].startswith("hf-frozenlm ablate --quick")
        assert f"--seed 0 --output_dir {runs}/{row['arm']}-seed0" in row["train_command"]
    # Study run folders keep metrics, not weights; the two mIoU models stay whole for `hf-frozenlm analyze`.
    assert not [p for p in runs.glob("*-seed0/model.safetensors") if not p.parent.name.startswith("masked-digits")]
    assert (runs / "masked-digits-llm-seed0" / "model.safetensors").exists()
    report = (out / "ablation.md").read_text()
    assert ablation.markdown_table(rows) in report
    assert (out / "ablation.png").stat().st_size > 1000
    with open(out / "miou.csv", newline="") as handle:
        miou = list(csv.DictReader(handle))
    stages = {(r["model"].split(" ")[0], r["stage"]) for r in miou}
    assert {("none", "trunk"), ("llm", "trunk"), ("llm", "llm_out"), ("input", "patches")} <= stages
    assert all(0.0 <= float(r["miou"]) <= 1.0 for r in miou)


def test_options_the_study_sets_are_refused(capsys):
    from hf_frozenlm.cli import main

    assert main(["ablate", "--quick", "--variant", "mlp"]) == 2
    assert "the study sets these per run" in capsys.readouterr().err
    assert main(["ablate", "--quick", "--no_such_training_option", "1"]) == 2  # refused before any run
    assert "--no_such_training_option" in capsys.readouterr().err


def test_study_budget_arm_arguments_and_layer_resolution(tmp_path):
    from hf_frozenlm.training import parse_train_arguments

    argv = ["--task", "motion-forecasting", "--max_steps", "5", "--learning_rate", "3e-4"]
    base = ablation.apply_study_defaults(parse_train_arguments([*argv, "--output_dir", str(tmp_path)]), argv)
    base.argv = list(argv)  # as `ablate` does: the runs' own command lines start from the user's options
    # A given step budget wins over the study's epochs; the study's other defaults apply; the user's options stay.
    assert ablation.describe_budget(base.training) == "5 steps" and base.training.eval_strategy == "no"
    assert base.training.learning_rate == 3e-4
    arm = ablation.arm_arguments(base, ablation.ARM_BY_NAME["llm-last2"], [-2, -1], 3, str(tmp_path / "run"))
    assert (arm.model.variant, arm.model.llm_layers, arm.training.seed) == ("llm", [-2, -1], 3)
    assert arm.training.output_dir == str(tmp_path / "run") and base.training.seed == 42  # the base is untouched
    # The command recorded for the run is the one that would reproduce it.
    assert arm.argv == [*argv, "--variant", "llm", "--seed", "3", "--output_dir", str(tmp_path / "run"),
                        "--llm_layers", "-2", "-1"]
    assert [ablation.resolve_layers(s, 30) for s in ("first", "middle", "last", "last2")] == [[0], [15], [-1], [-2, -1]]


def test_paired_test_t_and_sign_fallback(monkeypatch):
    from scipy import stats

    diffs = [0.01, 0.02, -0.005, 0.015, 0.03]
    name, p = ablation.paired_test(diffs)
    assert name == "paired t-test" and p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    name, p = ablation.paired_test(diffs)
    # 4 of 5 positive: two-sided exact binomial p = 2 * (1 + 5) / 32.
    assert name == "sign test" and p == pytest.approx(12 / 32)
    assert ablation.paired_test([0.1])[0].startswith("n/a")


def test_summary_pairs_by_seed():
    rows = [dict(arm=a, seed=s, llm_layers="", metric="accuracy", test_score=t, val_score=t, wall_s=1.0)
            for a, s, t in [("none", 0, 0.80), ("none", 1, 0.90), ("llm", 1, 0.95), ("llm", 0, 0.82)]]
    llm = ablation.summarize(rows)[1]
    assert llm["arm"] == "llm" and llm["seeds"] == [0, 1]
    assert llm["diff"][0] == pytest.approx(0.035) and llm["wins"] == (2, 2)
    # A metric where lower is better (motion's minADE): "better" means a lower error than none's.
    errors = [dict(row, task="motion-forecasting", metric="minADE") for row in rows]
    assert ablation.summarize(errors)[1]["wins"] == (0, 2)
    assert "Lower minADE is better" in ablation.markdown_table(errors)


def test_committed_results_match_their_csv():
    """The committed table (results/ and README.md's "Does it work?") is recomputed from the committed CSV, and
    the CSV says what produced it."""
    rows = ablation.read_runs_csv(RESULTS / "ablation_runs.csv")
    table = ablation.markdown_table(rows)
    assert table in (RESULTS / "ablation.md").read_text()
    assert table in (ROOT / "README.md").read_text()
    assert (RESULTS / "ablation.png").exists() and (RESULTS / "miou.csv").exists()
    seeds = {}
    for row in rows:
        seeds.setdefault(row["arm"], set()).add(row["seed"])
        assert re.fullmatch(r"[0-9a-f]{40}", row["git_commit"])
        assert row["torch"] and row["transformers"] and row["hf_frozenlm"]
        assert row["command"].startswith("hf-frozenlm ablate") and row["train_command"].startswith("hf-frozenlm train")
    # Every arm ran on the same seeds, so every difference is paired.
    assert len({frozenset(s) for s in seeds.values()}) == 1
    assert {arm.name for arm in ablation.ARMS} == set(seeds)
