"""The command-line commands, thin wrappers over the library: each parses its options, calls library functions and
prints. Library errors become exit codes in `hf_frozenlm.cli`; nothing in the library imports from here."""

from __future__ import annotations

import argparse


class CommandParser(argparse.ArgumentParser):
    """argparse, with usage errors raised as `UsageError` (the CLI prints them in one line) instead of exiting."""

    def error(self, message):
        from ..errors import UsageError

        raise UsageError(f"{message} (see `{self.prog} --help`)")
