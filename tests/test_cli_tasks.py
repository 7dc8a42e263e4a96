"""Every task through every command, as a user types them: train (a few steps) -> evaluate -> predict -> push
--dry-run (full and slim) -> the pushed folders load in a fresh process without hf_frozenlm, through the Auto classes
their auto_map names, give the in-process outputs, and the card's own snippets (pipeline included) run as written.

Before: three of the README's commands crashed at their first step (`train --task motion-forecasting` on label
smoothing, VQA and retrieval on an int index), push refused every non-image run, and evaluate / predict were ViT-only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from heads_helpers import save_tiny_llama

from hf_frozenlm.cli import main
from hf_frozenlm.tasks import TASK_NAMES, get_task

QUICK = ["--max_steps", "3", "--max_train_samples", "32", "--max_eval_samples", "16", "--eval_strategy", "no",
         "--save_strategy", "no", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
         "--logging_steps", "1", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=5)


REMOTE = textwrap.dedent("""
    import json, sys
    sys.modules["hf_frozenlm"] = None  # only the folder's own code may run
    import torch, transformers
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    case = json.load(open(sys.argv[1]))
    batch = torch.load(case["batch"])
    results = {}
    for folder in case["folders"]:
        config = json.load(open(folder + "/config.json"))
        for auto_name in config["auto_map"]:
            if auto_name == "AutoConfig":
                continue
            auto = getattr(transformers, auto_name, None) or get_class_from_dynamic_module(
                "frozenlm_auto." + auto_name, folder)
            model = auto.from_pretrained(folder, trust_remote_code=True).eval()
            with torch.no_grad():
                output = model(**batch)
            results[folder + "|" + auto_name] = {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}
    torch.save(results, sys.argv[2])
    for snippet in case["snippets"]:  # the card's usage code, as a user pastes it (the repo id is the folder)
        exec(compile(snippet, "card snippet", "exec"), {"__name__": "__main__"})
""")


@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_every_command_runs_for_every_task(task_name, tiny_llm, tmp_path, capsys):
    task = get_task(task_name)
    run = tmp_path / "run"
    torch.set_num_threads(1)
    assert main(["train", "--task", task_name, "--llm", tiny_llm, "--output_dir", str(run), *QUICK]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == task_name and task.primary_metric in metrics["test"]
    for name in ("config.json", "model.safetensors", "README.md", "run_config.json", "reproduce.sh",
                 "training_curves.png"):
        assert (run / name).is_file(), name

    assert main(["evaluate", "--model", str(run), "--max_eval_samples", "16", "--output", str(tmp_path / "e.json")]) == 0
    evaluation = json.loads((tmp_path / "e.json").read_text())
    assert evaluation["task"] == task_name and task.primary_metric in evaluation

    from hf_frozenlm.training.arguments import DataArguments

    data = task.load_data(DataArguments())
    paths, extra = task.write_examples(data, str(tmp_path / "inputs"), count=2)
    capsys.readouterr()
    assert main(["predict", "--model", str(run), *paths, *extra, "--json", "--output_dir", str(tmp_path / "drawn")]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert [p["input"] for p in predictions] == paths
    assert main(["predict", "--model", str(run), *paths, *extra]) == 0
    shown = capsys.readouterr().out
    assert all(path in shown for path in paths), shown

    repo_id = f"someone/{task_name}"
    assert main(["push", str(run), repo_id, "--dry-run", str(tmp_path / "full")]) == 0
    assert main(["push", str(run), repo_id, "--no-frozen-weights", "--dry-run", str(tmp_path / "slim")]) == 0
    card = (tmp_path / "full" / "README.md").read_text()
    from hf_frozenlm.hub.cards import hub_pipeline_tag

    assert f"pipeline_tag: {hub_pipeline_tag(task)}" in card and task.primary_metric in card
    assert "The layers' weights are included" in card
    assert "Slim checkpoint" in (tmp_path / "slim" / "README.md").read_text()

    # The fresh process: every Auto class of both pushed folders, then the card's snippets.
    import hf_frozenlm  # noqa: F401
    from hf_frozenlm.modeling import CUSTOM_AUTO_CLASSES
    from hf_frozenlm.training.loading import load_trained_model

    _, model, processor = load_trained_model(str(run))
    examples = [data.splits["test"][i] for i in range(2)]
    batch = {k: v for k, v in task.collators(model, processor)[1](examples).items() if k != "labels"}
    torch.save(batch, tmp_path / "batch.pt")
    snippets = [block.replace(repo_id, str(tmp_path / "full"))
                for block in re.findall(r"```python\n(.*?)```", card, flags=re.S)]
    case = {"folders": [str(tmp_path / "full"), str(tmp_path / "slim")], "batch": str(tmp_path / "batch.pt"),
            "snippets": snippets}
    (tmp_path / "case.json").write_text(json.dumps(case))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", REMOTE, str(tmp_path / "case.json"), str(tmp_path / "out.pt")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    results = torch.load(tmp_path / "out.pt")
    import transformers

    for key, outputs in results.items():
        auto_name = key.split("|")[1]
        local = (getattr(transformers, auto_name, None) or CUSTOM_AUTO_CLASSES[auto_name]).from_pretrained(
            key.split("|")[0]).eval()
        with torch.no_grad():
            expected = {k: v for k, v in local(**batch).items() if isinstance(v, torch.Tensor)}
        assert outputs.keys() == expected.keys(), key
        for name, tensor in expected.items():
            torch.testing.assert_close(outputs[name], tensor, rtol=1e-5, atol=1e-6, msg=lambda m: f"{key} {name}: {m}")
    assert {key.split("|")[1] for key in results} == set(type(model).auto_map_entries)
