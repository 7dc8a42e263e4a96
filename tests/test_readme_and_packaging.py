"""README's quickstart runs exactly as written; the wheel installs the Hub-portable code as hf_frozenlm.modeling."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_block(heading):
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("Quickstart"), "README.md:Quickstart", "exec"), {})
    assert (tmp_path / "vit-small-smollm2" / "modeling_vit_llama.py").is_file()


def test_wheel_ships_modeling_as_a_subpackage(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("hf_frozenlm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("hf_frozenlm/modeling/frozenlm_block.py", "hf_frozenlm/hub/model_card_template.md",
                 "hf_frozenlm/tasks/motion_forecasting.py", "hf_frozenlm/spaces/app.py",
                 "hf_frozenlm/spaces/demo_video.py", "hf_frozenlm/spaces/examples/motion-forecasting/scene_0.json"):
        assert name in names, name
    assert not any(name.startswith("modeling/") for name in names)  # never a top-level package named `modeling`
    # Installed from the wheel on its own (a target folder first on the path, this interpreter's packages for the
    # rest), the package imports from there and registers its Auto classes. A `venv --system-site-packages` would see
    # the base interpreter's packages, not those of a virtualenv running the suite (`make test PYTHON=.venv/...`).
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True)
    code = (
        "import hf_frozenlm, transformers; "
        f"assert hf_frozenlm.modeling.__file__.startswith({str(target)!r}), hf_frozenlm.modeling.__file__; "
        "print(transformers.AutoConfig.for_model('vit_llama', llm_config={'model_type': 'llama'}).model_type)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.stdout.strip() == "vit_llama"
