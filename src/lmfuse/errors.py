"""One error hierarchy for lmfuse.

Every error says what was expected, what was found and, where possible, how to fix it. The CLI turns
an ``LmfuseError`` into a message on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LmfuseError(Exception):
    """Base class of every error lmfuse raises on purpose."""


class ConfigError(LmfuseError):
    """A recipe, config file or argument is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"invalid config{f' in {source}' if source else ''}"
        if len(self.problems) == 1:
            msg = f"{head}: {self.problems[0]}"
        else:
            msg = f"{head} ({len(self.problems)} problems):\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class IncompatibleModelsError(LmfuseError):
    """Models cannot be combined as asked (different vocabularies, shapes, architectures...)."""


class CheckpointError(LmfuseError):
    """A checkpoint is missing, malformed, or an output directory cannot be written safely."""


class ModelNotFoundError(CheckpointError):
    """A model path or hub id could not be resolved offline."""


class BackendError(LmfuseError):
    """A text-generation backend failed (HTTP errors after retries, timeouts, bad replies)."""


class InputDataError(LmfuseError):
    """An input data file (JSONL, text) has a bad record; the message names the file and line."""
