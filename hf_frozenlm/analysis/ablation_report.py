"""What the ablation study's CSVs say, as tables and plots: results/README.md's generated blocks, ablation.png (every
seed per arm per task) and ablation_curves.png (validation curves: did the budget let the plain trunk converge?).

Only the blocks between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->` are rewritten, so the reading
written around them stays; a missing README gets a skeleton with every block.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

from .ablation import ARM_BY_NAME, ARMS, BASELINE, read_csv

# The paper's numbers for the benchmark closest to each builtin (notes/paper.md, sections 2 and 3): its baseline,
# + frozen LLaMA-7B block, and where it ran them the MLP control and the random block. Retrieval is compared on the
# mean of R@1/5/10, the metric our table uses.
PAPER = {
    "image-classification": dict(benchmark="ImageNet, ViT-S, 300 ep", unit="top-1 %", none=80.1, llm=80.7, mlp=80.4,
                                 random=76.9),
    "video-classification": dict(benchmark="SSv2, VideoMAE ViT-S", unit="top-1 %", none=64.71, llm=65.89),
    "point-cloud-classification": dict(benchmark="ScanObjectNN OBJ, Point-BERT", unit="top-1 %", none=88.1, llm=88.5),
    "motion-forecasting": dict(benchmark="Argoverse, VectorNet", unit="minADE", none=0.77, llm=0.76),
    "visual-question-answering": dict(benchmark="VQAv2, METER", unit="VQA score %", none=69.60, llm=70.23),
    "image-text-retrieval": dict(benchmark="Flickr30k image retrieval, METER", unit="mean R@1/5/10 %", none=73.33,
                                 llm=74.19),
    "3d-question-answering": dict(benchmark="SQA3D", unit="EM@1 %", none=47.20, llm=48.09),
}
TABLE1_ARMS = (("none", "baseline"), ("llm", "+ frozen LLM block"), ("mlp", "+ MLP control"),
               ("random-llm", "+ random block"))


# -- numbers ---------------------------------------------------------------------------------------------------
def tasks_of(rows: list[dict]) -> list[str]:
    seen = []
    for row in rows:
        if row["task"] not in seen:
            seen.append(row["task"])
    return seen


def of_task(rows: list[dict], task: str) -> list[dict]:
    return [row for row in rows if row["task"] == task]


def greater_is_better(rows: list[dict]) -> bool:
    return str(rows[0].get("greater_is_better", "True")) == "True" if rows else True


def paired_test(differences: list[float]) -> tuple[str, float]:
    """(test name, two-sided p) for paired differences: a paired t-test through scipy, else an exact sign test."""
    if len(differences) < 2:
        return "n/a (1 seed)", float("nan")
    try:
        from scipy import stats
    except ImportError:
        stats = None
    if stats is not None:
        if all(d == differences[0] for d in differences):
            # Zero variance: t is undefined; identical non-zero shifts are as significant as n seeds can say.
            return "paired t-test", 1.0 if differences[0] == 0 else float("nan")
        return "paired t-test", float(stats.ttest_1samp(differences, 0.0).pvalue)
    wins = sum(d > 0 for d in differences)
    n = sum(d != 0 for d in differences)
    if n == 0:
        return "sign test", 1.0
    tail = sum(math.comb(n, k) for k in range(0, min(wins, n - wins) + 1)) / 2 ** n
    return "sign test", min(1.0, 2 * tail)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(rows: list[dict]) -> list[dict]:
    """Per arm of one task (in study order): seeds, mean/std of the test and validation score, runtime, and the paired
    difference of the test score against the plain trunk on the seeds both have ("wins" counts improvements: higher
    or lower, as the metric says)."""
    higher = greater_is_better(rows)
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    order = [arm.name for arm in ARMS if arm.name in by_arm] + sorted(set(by_arm) - set(ARM_BY_NAME))
    baseline = {int(r["seed"]): float(r["test_score"]) for r in by_arm.get(BASELINE, [])}
    summary = []
    for name in order:
        runs = sorted(by_arm[name], key=lambda r: int(r["seed"]))
        entry = dict(arm=name, llm_layers=runs[0]["llm_layers"], seeds=[int(r["seed"]) for r in runs],
                     test=mean_std([float(r["test_score"]) for r in runs]),
                     val=mean_std([float(r["val_score"]) for r in runs]),
                     runtime=statistics.fmean(float(r["wall_s"]) for r in runs))
        if name != BASELINE and baseline:
            diffs = [float(r["test_score"]) - baseline[int(r["seed"])] for r in runs if int(r["seed"]) in baseline]
            if diffs:
                entry["diff"] = mean_std(diffs)
                entry["wins"] = (sum((d > 0) if higher else (d < 0) for d in diffs), len(diffs))
                entry["test_name"], entry["p"] = paired_test(diffs)
        summary.append(entry)
    return summary


def is_fraction(metric: str) -> bool:
    """Accuracy-like metrics in [0, 1] are shown in percent (and differences in percentage points)."""
    return any(part in metric for part in ("accuracy", "exact_match", "recall", "R@", "miss_rate"))


def format_pair(pair: tuple[float, float], percent: bool, signed: bool = False) -> str:
    mean, std = pair
    scale, digits = (100, 2) if percent else (1, 3)
    return f"{scale * mean:{'+' if signed else ''}.{digits}f} ± {scale * std:.{digits}f}"


def format_p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("< 0.001" if p < 0.0005 else f"{p:.3f}")


# -- tables ----------------------------------------------------------------------------------------------------
def markdown_table(rows: list[dict]) -> str:
    """One task's table: the metric (in % for accuracies), mean ± sample std over seeds; Δ is arm minus none on the
    same seed."""
    metric, higher = rows[0]["metric"], greater_is_better(rows)
    percent = is_fraction(metric)
    unit = " (%)" if percent else ""
    lines = [f"| arm | LLM layers | seeds | test {metric}{unit} | val {metric}{unit} | Δ test vs none"
             f"{' (pp)' if percent else ''} | better/seeds | p | s/run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in summarize(rows):
        if "diff" in entry:
            diff, wins = format_pair(entry["diff"], percent, signed=True), f"{entry['wins'][0]}/{entry['wins'][1]}"
            p_text = format_p(entry["p"])
        else:
            diff, wins, p_text = "—", "—", "—"
        lines.append(f"| {entry['arm']} | {entry['llm_layers'] or '—'} | {len(entry['seeds'])} | "
                     f"{format_pair(entry['test'], percent)} | {format_pair(entry['val'], percent)} | {diff} | "
                     f"{wins} | {p_text} | {entry['runtime']:.0f} |")
    if not higher:
        lines += ["", f"Lower {metric} is better; better/seeds counts seeds where the arm's {metric} is below none's."]
    return "\n".join(lines) + "\n"


def other_metrics_table(rows: list[dict]) -> str:
    """The task's other test metrics (minFDE and miss rate beside minADE, R@1/5/10 beside their mean, ...), mean over
    seeds per arm; empty when the task reports only its primary metric."""
    metric = rows[0]["metric"]
    per_arm: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        values = json.loads(row.get("test_metrics") or "{}")
        for name, value in values.items():
            if name not in (metric, "loss", "epoch") and not name.startswith("train_"):
                per_arm.setdefault(row["arm"], {}).setdefault(name, []).append(float(value))
    if not per_arm:
        return ""
    names = sorted({name for values in per_arm.values() for name in values})
    lines = ["| arm | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for arm in [a.name for a in ARMS if a.name in per_arm]:
        cells = []
        for name in names:
            values = per_arm[arm].get(name, [])
            cells.append(format_pair(mean_std(values), is_fraction(name)) if values else "")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(entry: dict | None, percent: bool) -> str:
    if entry is None:
        return "—"
    text = format_pair(entry["test"], percent)
    if "diff" in entry:
        text += (f"<br>Δ {format_pair(entry['diff'], percent, signed=True)}, {entry['wins'][0]}/{entry['wins'][1]} "
                 f"better, p {format_p(entry['p'])}")
    return text


def _paper_cell(task: str) -> str:
    paper = PAPER.get(task)
    if not paper:
        return "—"
    extra = ", ".join(f"{label} {paper[key]}" for key, label in (("mlp", "MLP"), ("random", "random")) if key in paper)
    return f"{paper['none']} → {paper['llm']}{f' ({extra})' if extra else ''}<br>{paper['benchmark']}, {paper['unit']}"


def cross_task_table(rows: list[dict]) -> str:
    """Table 1 of the paper, for the builtins: per task the baseline, + frozen LLM block, + MLP control, + random
    block (mean ± std over seeds, with the paired difference to the baseline), and the paper's numbers."""
    lines = ["| task (builtin, metric) | budget | " + " | ".join(label for _, label in TABLE1_ARMS)
             + " | paper: baseline → + LLaMA-7B block |",
             "|---|---|" + "---:|" * len(TABLE1_ARMS) + "---|"]
    for task in tasks_of(rows):
        task_rows = of_task(rows, task)
        metric, percent = task_rows[0]["metric"], is_fraction(task_rows[0]["metric"])
        by_arm = {entry["arm"]: entry for entry in summarize(task_rows)}
        direction = "↑" if greater_is_better(task_rows) else "↓"
        name = f"{task}<br>{task_rows[0]['dataset']}, {metric}{' %' if percent else ''} {direction}"
        cells = [_cell(by_arm.get(arm), percent) for arm, _ in TABLE1_ARMS]
        lines.append(f"| {name} | {task_rows[0]['budget']} | " + " | ".join(cells) + f" | {_paper_cell(task)} |")
    return "\n".join(lines) + "\n"


def convergence(curves: list[dict], task: str, arm: str = BASELINE) -> dict | None:
    """How the arm's validation metric moved over the run, averaged over seeds: its value at half and three
    quarters of the budget and at the end, the change over the last quarter (in the metric's better direction), and
    the epoch of its best value."""
    from ..tasks import TASKS

    per_seed: dict[str, list[tuple[float, float]]] = {}
    metric = None
    for row in curves:
        if row["task"] == task and row["arm"] == arm:
            per_seed.setdefault(row["seed"], []).append((float(row["epoch"]), float(row["val_score"])))
            metric = row["metric"]
    if not per_seed:
        return None
    higher = metric != "loss" and (TASKS[task].greater_is_better if task in TASKS else True)

    def at(points, fraction):
        last = points[-1][0]
        return min(points, key=lambda p: abs(p[0] - fraction * last))[1]

    half, three_quarters, end, best_epochs, gains = [], [], [], [], []
    for points in per_seed.values():
        points = sorted(points)
        half.append(at(points, 0.5))
        three_quarters.append(at(points, 0.75))
        end.append(points[-1][1])
        gains.append((points[-1][1] - at(points, 0.75)) * (1 if higher else -1))
        best = max(points, key=lambda p: p[1] if higher else -p[1])
        best_epochs.append(best[0])
    return dict(metric=metric, higher=higher, half=statistics.fmean(half),
                three_quarters=statistics.fmean(three_quarters),
                end=statistics.fmean(end), last_quarter_gain=statistics.fmean(gains),
                best_epoch=statistics.fmean(best_epochs), epochs=max(max(p[0] for p in s) for s in per_seed.values()),
                seeds=len(per_seed))


def budgets_table(rows: list[dict], curves: list[dict]) -> str:
    """Per task: the budget, the plain trunk's validation curve at 1/2, 3/4 and the end of it, the change over its
    last quarter, the runs' time and precision."""
    lines = ["| task | budget | none's val metric at 1/2 · 3/4 · end of the budget | last-quarter change | best "
             "epoch (mean) | s/run none · llm | runs · run time | precision, threads |",
             "|---|---|---|---:|---:|---|---:|---|"]
    for task in tasks_of(rows):
        task_rows = of_task(rows, task)
        curve = convergence(curves, task)
        metric = curve["metric"] if curve else task_rows[0]["metric"]
        scale = 100 if is_fraction(metric) else 1
        digits = 1 if scale == 100 else 3
        if curve:
            shape = " · ".join(f"{scale * curve[k]:.{digits}f}" for k in ("half", "three_quarters", "end"))
            gain = f"{scale * curve['last_quarter_gain']:+.{digits}f}{' pp' if scale == 100 else ''}"
            best = f"{curve['best_epoch']:.1f} of {curve['epochs']:g}"
        else:
            shape, gain, best = "no curve", "", ""
        per_arm = {arm: [float(r["wall_s"]) for r in task_rows if r["arm"] == arm] for arm in ("none", "llm")}
        times = " · ".join(f"{statistics.fmean(v):.0f}" if v else "—" for v in per_arm.values())
        total = sum(float(r["wall_s"]) for r in task_rows)
        precisions = sorted({f"{r['precision']}, {r['threads']}" for r in task_rows})
        lines.append(f"| {task} | {task_rows[0]['budget']} | {metric}: {shape} | {gain} | {best} | {times} | "
                     f"{len(task_rows)} · {total / 60:.1f} min | {'; '.join(precisions)} |")
    return "\n".join(lines) + "\n"


def _budget_origin(row: dict) -> str:
    """Whether a run's budget is its task's recipe or the study's longer one (ablation.STUDY_EPOCHS)."""
    from ..tasks import TASKS

    task = TASKS.get(row["task"])
    recipe = task.training_defaults.get("num_train_epochs") if task else None
    if recipe is None or row["budget"] == f"{recipe:g} epochs":
        return "the task's recipe"
    return f"longer than the task's recipe of {recipe:g} epochs, see the budgets table"


def task_section(rows: list[dict]) -> str:
    """One task's generated block: how its runs were made, its table, its other metrics."""
    first = rows[0]
    seeds = sorted({int(r["seed"]) for r in rows})
    commits = sorted({r["git_commit"][:12] for r in rows})
    dirty = sorted({f for r in rows for f in (r.get("git_dirty") or "").split(";") if f})
    llm = next((r["llm"] for r in rows if r["llm"]), "none")
    lines = [f"Dataset `{first['dataset']}`, trunk `{first['trunk']}`, LLM `{llm}`, {first['budget']} per run "
             f"(every arm alike; {_budget_origin(first)}), seeds {', '.join(map(str, seeds))}; {first['cpu']}; "
             "commit(s) "
             + ", ".join(f"`{c}`" for c in commits)
             + (f" (uncommitted edits in: {', '.join(dirty)})" if dirty else "") + ".",
             "", markdown_table(rows).rstrip("\n")]
    others = other_metrics_table(rows)
    if others:
        lines += ["", "Other test metrics (mean ± std over seeds):", "", others.rstrip("\n")]
    return "\n".join(lines) + "\n"


# -- pseudo-mask mIoU (masked digits, cluttered point clouds) ---------------------------------------------------
def _miou_by_seed(rows: list[dict], arm: str, stage: str, kind: str) -> dict[int, float]:
    return {int(r["seed"]): float(r["miou"]) for r in rows if r["arm"] == arm and r["stage"] == stage
            and r["kind"] == kind and r["miou"] not in ("", "nan")}


def _mean_std(values, signed: bool = False) -> str:
    values = list(values)
    if not values:
        return ""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):{'+' if signed else ''}.3f} ± {std:.3f}"


def _miou_diff(rows: list[dict], arm: str, stage: str, kind: str, ref_arm: str, ref_stage: str) -> str:
    own, ref = _miou_by_seed(rows, arm, stage, kind), _miou_by_seed(rows, ref_arm, ref_stage, kind)
    diffs = [own[s] - ref[s] for s in sorted(own) if s in ref]
    if not diffs or (arm, stage) == (ref_arm, ref_stage):
        return "—"
    _, p = paired_test(diffs)
    return f"{_mean_std(diffs, signed=True)}, {sum(d > 0 for d in diffs)}/{len(diffs)}, p {format_p(p)}"


def accuracy_line(run_rows: list[dict], arm: str, what: str) -> str:
    """'- `arm` WHAT mean ± std % (lowest ...) over N seeds', or '' without runs of that arm."""
    accuracies = [float(r["test_accuracy"]) for r in run_rows if r["arm"] == arm]
    if not accuracies:
        return ""
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return (f"- `{arm}` {what} {100 * statistics.fmean(accuracies):.1f} ± {100 * std:.1f} % "
            f"(lowest {100 * min(accuracies):.1f} %) over {len(accuracies)} seeds")


def miou_table(rows: list[dict], arms, stages, references, footnote: str) -> str:
    """mIoU per arm x stage (mean ± std over seeds) for magnitude maps, frequency maps and CLS attention, with the
    paired difference of each stage against the same seed's `none` trunk and against the model's own trunk; then the
    references (rows whose arm is the reference's name; kind "-" for a map that is neither kind)."""
    lines = ["| model | stage | magnitude | Δ vs none's trunk | Δ vs own trunk | frequency | Δ vs none's trunk | "
             "Δ vs own trunk | CLS attention |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in arms:
        for stage in [s for s in stages if _miou_by_seed(rows, arm, s, "magnitude")]:
            cells = []
            for kind in ("magnitude", "frequency"):
                cells += [_mean_std(_miou_by_seed(rows, arm, stage, kind).values()),
                          _miou_diff(rows, arm, stage, kind, "none", "trunk"),
                          _miou_diff(rows, arm, stage, kind, arm, "trunk")]
            lines.append(f"| {arm} | {stage} | " + " | ".join([*cells, ""]) + " |")
        for stage in ("trunk_cls", "llm_cls"):
            attention = _miou_by_seed(rows, arm, stage, "attention")
            if attention:
                lines.append(f"| {arm} | {stage} |  |  |  |  |  |  | {_mean_std(attention.values())} |")
    for reference in references:
        scores = {r["kind"]: float(r["miou"]) for r in rows if r["arm"] == reference}
        if scores:
            stage = next(r["stage"] for r in rows if r["arm"] == reference)
            magnitude, frequency = (scores.get(kind, scores.get("-", float("nan")))
                                    for kind in ("magnitude", "frequency"))
            lines.append(f"| {reference} | {stage} | {magnitude:.3f} |  |  | {frequency:.3f} |  |  |  |")
    return "\n".join(lines) + "\n\n" + footnote + "\n"


# -- plots -----------------------------------------------------------------------------------------------------
def _grid(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    return plt, fig, list(axes.flat)


def plot_runs(rows: list[dict], path) -> None:
    """One panel per task: every seed's test score per arm (dots), mean ± std (diamond and bar), the plain trunk's
    mean as a dashed line. The y axes are cut to each task's data, so no bars."""
    tasks = tasks_of(rows)
    plt, fig, axes = _grid(len(tasks))
    for axis, task in zip(axes, tasks):
        task_rows = of_task(rows, task)
        metric = task_rows[0]["metric"]
        scale = 100 if is_fraction(metric) else 1
        summary = summarize(task_rows)
        for index, entry in enumerate(summary):
            values = [scale * float(r["test_score"]) for r in task_rows if r["arm"] == entry["arm"]]
            offsets = [0.25 * (k - (len(values) - 1) / 2) / max(len(values) - 1, 1) for k in range(len(values))]
            axis.plot([index + o for o in offsets], values, "o", color="black", markersize=3, alpha=0.6)
            colour = "tab:gray" if entry["arm"] == BASELINE else "tab:blue"
            axis.errorbar(index + 0.3, scale * entry["test"][0], yerr=scale * entry["test"][1], fmt="D",
                          color=colour, capsize=3, markersize=5)
        if summary and summary[0]["arm"] == BASELINE:
            axis.axhline(scale * summary[0]["test"][0], color="tab:gray", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(summary)), [e["arm"] for e in summary], rotation=35, ha="right", fontsize=7)
        axis.set_title(f"{task}\ntest {metric}{' (%)' if scale == 100 else ''}, "
                       f"{'higher' if greater_is_better(task_rows) else 'lower'} is better", fontsize=8)
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle("Every seed per arm per task (dots), mean ± std (diamond); dashed: the plain trunk's mean",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(rows: list[dict], curves: list[dict], path, arms=("none", "llm")) -> None:
    """One panel per task: the validation metric per epoch of every seed of the plain trunk and the frozen block."""
    tasks = tasks_of(rows)
    plt, fig, axes = _grid(len(tasks))
    colours = {"none": "tab:gray", "llm": "tab:blue"}
    for axis, task in zip(axes, tasks):
        metric = next((r["metric"] for r in curves if r["task"] == task), of_task(rows, task)[0]["metric"])
        scale = 100 if is_fraction(metric) else 1
        for arm in arms:
            by_seed: dict[str, list[tuple[float, float]]] = {}
            for row in curves:
                if row["task"] == task and row["arm"] == arm:
                    by_seed.setdefault(row["seed"], []).append((float(row["epoch"]), scale * float(row["val_score"])))
            for index, points in enumerate(by_seed.values()):
                points = sorted(points)
                axis.plot([p[0] for p in points], [p[1] for p in points], color=colours.get(arm, "tab:orange"),
                          alpha=0.6, linewidth=1, label=arm if index == 0 else None)
        # A curve that falls by more than an order of magnitude (motion's minADE, retrieval's loss) hides its tail, the
        # part that says whether it has converged, on a linear axis.
        low, high = axis.dataLim.y0, axis.dataLim.y1
        log = low > 0 and high / low > 10
        if log:
            axis.set_yscale("log")
        axis.set_title(f"{task}: validation {metric}" + (" (log scale)" if log else ""), fontsize=8)
        axis.set_xlabel("epoch", fontsize=7)
        axis.tick_params(which="both", labelsize=7)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    fig.suptitle("Validation curves, every seed: has the plain trunk (grey) stopped improving by the end?", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- results/README.md -------------------------------------------------------------------------------------------
def _marker(name: str) -> tuple[str, str]:
    return (f"<!-- generated: {name} (hf_frozenlm.analysis.ablation_report, from the CSVs) -->",
            f"<!-- end generated: {name} -->")


def generated_blocks(out: Path) -> dict[str, str]:
    """Every generated block of OUT/README.md, computed from OUT's CSVs."""
    from .cluttered_points_study import miou_markdown as points_miou_markdown
    from .masked_digits_study import miou_markdown

    rows = read_csv(out / "ablation_runs.csv")
    curves = read_csv(out / "ablation_curves.csv")
    blocks = {}
    if rows:
        blocks["cross-task"] = cross_task_table(rows)
        blocks["budgets"] = budgets_table(rows, curves)
        for task in tasks_of(rows):
            blocks[f"task {task}"] = task_section(of_task(rows, task))
    miou = read_csv(out / "miou.csv")
    if miou:
        blocks["miou"] = miou_markdown(miou, read_csv(out / "miou_runs.csv"))
    miou_points = read_csv(out / "miou_points.csv")
    if miou_points:
        blocks["miou-points"] = points_miou_markdown(miou_points, read_csv(out / "miou_points_runs.csv"))
    return blocks


def update_generated(text: str, blocks: dict[str, str]) -> str:
    """`text` with each block's content replaced; blocks it lacks are appended under their own heading."""
    for name, content in blocks.items():
        start, end = _marker(name)
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        replacement = f"{start}\n{content.rstrip()}\n{end}"
        if pattern.search(text):
            text = pattern.sub(lambda _: replacement, text)
        else:
            text = text.rstrip("\n") + f"\n\n## {name}\n\n{replacement}\n"
    return text


def write_report(out: Path) -> list[Path]:
    """Redraw OUT/ablation.png and OUT/ablation_curves.png and rewrite OUT/README.md's generated blocks."""
    out = Path(out)
    rows = read_csv(out / "ablation_runs.csv")
    written = []
    if rows:
        plot_runs(rows, out / "ablation.png")
        plot_curves(rows, read_csv(out / "ablation_curves.csv"), out / "ablation_curves.png")
        written += [out / "ablation.png", out / "ablation_curves.png"]
    readme = out / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else (
        "# Does the frozen LLM block help?\n\nGenerated by `hf-frozenlm ablate`; the tables below are redrawn from "
        "ablation_runs.csv, ablation_curves.csv, miou.csv and miou_points.csv after every study.\n")
    readme.write_text(update_generated(text, generated_blocks(out)), encoding="utf-8")
    return [*written, readme]
