"""Secrets never leave the process: tokens, keys and passwords are redacted before anything is written or logged.

A run folder records how it was made (run_config.json, reproduce.sh, the model card), and `push` publishes it; the
command line that made it may hold `--hub_token hf_...`, a password option or a URL with credentials. Everything
written goes through `redact_argv` / `redact_mapping` / `redact_text`; log records pass a `RedactingFilter`; and
`find_secrets` lets `push` refuse a folder that holds one anyway (an old run, a file copied in by hand).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

REDACTED = "<redacted>"

# Option names whose value is a secret: --hub_token, --wandb_api_key, --db_password, --client_secret, ...
_SECRET_NAME = re.compile(r"(^|_)(token|key|credentials?)$|password|passwd|secret", re.IGNORECASE)
# ... but not a tokenizer's special tokens ("pad_token": "[PAD]"), which are vocabulary, not credentials.
_SPECIAL_TOKEN_NAME = re.compile(r"^(pad|unk|cls|sep|mask|bos|eos|additional_special)_tokens?$", re.IGNORECASE)
# Values that are secrets whatever option carries them.
_SECRET_VALUES = [
    re.compile(r"\bhf_[A-Za-z0-9]{16,}\b"),  # Hugging Face access tokens
    re.compile(r"\b(sk|ghp|gho|github_pat|xox[abp])[-_][A-Za-z0-9_-]{16,}\b"),  # OpenAI, GitHub, Slack
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{12,}=*"),
]
# Credentials inside URLs: scheme://user:password@host -> scheme://<redacted>@host
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<credentials>[^\s/@:]+(?::[^\s/@]*)?)@")
# Masks transformers itself writes (TrainingArguments.to_dict: "<HUB_TOKEN>") and ours: not secrets.
_MASKS = re.compile(r"^(<[A-Z_]+>|<redacted>|\*+)?$")


def is_secret_name(name: str) -> bool:
    """Whether an option or field called `name` holds a secret (`--hub_token`, `api_key`, `db_password`, ...)."""
    name = name.lstrip("-").replace("-", "_")
    return bool(_SECRET_NAME.search(name)) and not _SPECIAL_TOKEN_NAME.match(name)


def redact_text(text: str, secrets=()) -> str:
    """`text` with known secret values, token-shaped strings and URL credentials replaced by <redacted>."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_VALUES:
        text = pattern.sub(REDACTED, text)
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def secret_values(argv: list[str]) -> list[str]:
    """The values of secret options in a command line (`--hub_token X`, `--hub_token=X`)."""
    values = []
    for index, arg in enumerate(argv):
        name, has_value, value = arg.partition("=")
        if not name.startswith("--") or not is_secret_name(name):
            continue
        if has_value:
            values.append(value)
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            values.append(argv[index + 1])
    return [value for value in values if not _MASKS.match(value)]


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with every secret option's value and every token-shaped string redacted."""
    secrets = secret_values(argv)
    redacted, value_is_secret = [], False
    for arg in argv:
        name, has_value, value = arg.partition("=")
        secret_option = name.startswith("--") and is_secret_name(name)
        if value_is_secret and not arg.startswith("--"):
            redacted.append(REDACTED)
        elif secret_option and has_value and not _MASKS.match(value):
            redacted.append(f"{name}={REDACTED}")
        else:
            redacted.append(redact_text(arg, secrets))
        value_is_secret = secret_option and not has_value
    return redacted


def redact_mapping(value, secrets=(), key: str = ""):
    """A JSON-like structure with secret fields' values and token-shaped strings redacted (recursively)."""
    if isinstance(value, dict):
        return {k: redact_mapping(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_mapping(v, secrets, key) for v in value]
    if isinstance(value, str):
        if key and is_secret_name(key) and not _MASKS.match(value):
            return REDACTED
        return redact_text(value, secrets)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites every log record with secrets redacted (install it on the handlers that write anywhere)."""

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(secrets=()) -> None:
    """Redact secrets from every record the root logger's handlers emit (the CLI's log output)."""
    redacting = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)


# Text files a run or model folder may hold; weights are binary and skipped.
_TEXT_SUFFIXES = {".json", ".md", ".sh", ".txt", ".yaml", ".yml", ".py", ".csv", ".cfg", ".ini", ".toml", ".jsonl"}
# A field with a value: "name": "value" (JSON), name: value (YAML front matter), --name value / --name=value (shell).
_JSON_FIELD = re.compile(r'"(?P<name>[A-Za-z0-9_-]+)"\s*:\s*"(?P<value>[^"]*)"')
_YAML_FIELD = re.compile(r"^\s*(?P<name>[A-Za-z0-9_-]+)\s*:\s*(?P<value>[^\s#]+)\s*$")
_OPTION = re.compile(r"(?P<name>--[A-Za-z0-9_-]+)(?:=|\s+)(?P<value>[^\s\"']+)")


def _named_secret(path: Path, line: str) -> str | None:
    """The name of a secret field or option with a real value on this line, if any (code files are not parsed:
    their names are identifiers, not settings)."""
    suffix = path.suffix.lower()
    if suffix == ".py":
        return None
    patterns = [_OPTION]
    if suffix in (".json", ".jsonl"):
        patterns = [_JSON_FIELD]
    elif suffix in (".yaml", ".yml", ".md", ".cfg", ".ini", ".toml"):
        patterns = [_YAML_FIELD, _OPTION]
    for pattern in patterns:
        for match in pattern.finditer(line):
            if is_secret_name(match["name"]) and not _MASKS.match(match["value"]):
                return match["name"].lstrip("-")
    return None


def find_secrets(folder) -> list[str]:
    """Where a folder's text files hold something that looks like a secret: 'file:line: what' for each."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _TEXT_SUFFIXES or path.stat().st_size > 20_000_000:
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            where = f"{path.relative_to(folder)}:{number}"
            if any(pattern.search(line) for pattern in _SECRET_VALUES):
                found.append(f"{where}: an access token")
            elif any(match["credentials"] != REDACTED for match in _URL_CREDENTIALS.finditer(line)):
                found.append(f"{where}: credentials in a URL")
            elif (name := _named_secret(path, line)) is not None:
                found.append(f"{where}: a value for {name}")
    return found
