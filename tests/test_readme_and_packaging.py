"""README's quickstart runs exactly as written; the wheel installs the Hub-portable code as hf_frozenlm.modeling."""

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
    assert "hf_frozenlm/modeling/frozenlm_block.py" in names
    assert not any(name.startswith("modeling/") for name in names)  # never a top-level package named `modeling`
    # Installed from the wheel into a fresh environment, the package imports and registers its Auto classes.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    code = (
        "import hf_frozenlm, transformers; "
        "assert 'site-packages' in hf_frozenlm.modeling.__file__ and str(hf_frozenlm.modeling.__file__).startswith("
        f"{str(venv)!r}), hf_frozenlm.modeling.__file__; "
        "print(transformers.AutoConfig.for_model('vit_llama', llm_config={'model_type': 'llama'}).model_type)"
    )
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "vit_llama"
