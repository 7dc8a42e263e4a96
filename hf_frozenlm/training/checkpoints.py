"""Which checkpoint `--resume_from_checkpoint last` resumes: the newest complete one.

Trainer writes a checkpoint's weights first and `trainer_state.json` last, so a run killed while saving leaves a
`checkpoint-N` without a (valid) trainer_state.json; resuming from it would fail or lose state.
"""

from __future__ import annotations

import json
import logging
import os
import re

from ..errors import RunFolderError

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def checkpoint_problem(folder: str) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete."""
    state = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(state):
        return "no trainer_state.json (the save was interrupted)"
    try:
        with open(state, encoding="utf-8") as handle:
            json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "trainer_state.json is cut short (the save was interrupted)"
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _WEIGHTS):
        return "no model weights"
    if not os.path.isfile(os.path.join(folder, "optimizer.pt")):
        return "no optimizer state"
    return None


def latest_complete_checkpoint(output_dir: str) -> str:
    """The newest checkpoint-N in `output_dir` that is complete; incomplete newer ones are skipped with a warning."""
    found = sorted(
        ((int(match[1]), entry) for entry in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
         if (match := _CHECKPOINT.match(entry)) and os.path.isdir(os.path.join(output_dir, entry))),
        reverse=True,
    )
    for _, name in found:
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("Skipping %s: %s; resuming from an earlier checkpoint.", folder, problem)
    raise RunFolderError(f"No complete checkpoint-* folder in {output_dir!r} to resume from"
                         + (f" ({len(found)} incomplete)." if found else "."))


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint: "last"/"true" -> the newest complete checkpoint; a path is checked as given."""
    if resume in (None, "", "False", "false"):
        return None
    if resume in ("last", "True", "true"):
        return latest_complete_checkpoint(output_dir)
    problem = checkpoint_problem(resume) if os.path.isdir(resume) else "no such folder"
    if problem:
        raise RunFolderError(f"--resume_from_checkpoint {resume}: cannot resume from it: {problem}.")
    return resume
