"""The errors hf_frozenlm raises on purpose: each says what was found and how to fix it.

Library code raises these (and the model code's `LLMCheckpointError`, `LLMSourceNotFoundError`,
`ProcessorInputError`); only `hf_frozenlm.cli` turns them into a one-line message and an exit code. Anything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class FrozenLMError(Exception):
    """Base of the errors a user can fix: bad input, bad options, an unusable folder."""


class DataError(FrozenLMError, ValueError):
    """A dataset or input file that cannot be used, with what was found and what to pass instead."""


class UsageError(FrozenLMError, ValueError):
    """Options that are out of range or do not fit together (or do not fit the task)."""


class RunFolderError(FrozenLMError, ValueError):
    """A folder that is not a usable run or model folder (missing files, unknown model, incomplete checkpoint)."""


class PublishError(FrozenLMError, ValueError):
    """An input that cannot be published (not a model, a secret in the folder, bad repo id, offline); nothing was sent."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Every exception type whose message is meant for the user as is (the CLI prints it without a traceback)."""
    from .modeling import LLMCheckpointError, LLMSourceNotFoundError, ProcessorInputError

    return (FrozenLMError, LLMCheckpointError, LLMSourceNotFoundError, ProcessorInputError)
