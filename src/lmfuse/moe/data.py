"""Text data for router training and inspection: JSONL records ``{"text": ..., "category": ...}`` or
``{"prompt": ..., "completion": ..., "category": ...}`` (training then learns the completion only), or
plain text, one example per line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmfuse.core.jsonl import BadRecord, describe, read_records, read_text, readable_file
from lmfuse.errors import InputDataError


@dataclass
class Example:
    text: str
    """The whole text (prompt + completion when both are given)."""
    category: str | None = None
    prompt: str | None = None
    """When set, ``text`` starts with it and training ignores its tokens."""


def read_examples(path: str | Path) -> list[Example]:
    """Read ``path``: ``.jsonl`` → records with ``text`` (and optional ``category``); else text lines."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_records(path, _record, '{"text": ...} or {"prompt": ..., "completion": ...} record')
    if not readable_file(path):
        raise InputDataError(f"data file not found: {path}")
    examples = [Example(line) for line in read_text(path, "data file").splitlines() if line.strip()]
    if not examples:
        raise InputDataError(f"{path}: no examples (expected JSONL records or non-empty text lines)")
    return examples


def _record(record, line: int) -> Example:
    category = record.get("category") if isinstance(record, dict) else None
    category = None if category is None else str(category)
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return Example(record["text"], category)
    if (
        isinstance(record, dict)
        and isinstance(record.get("prompt"), str)
        and isinstance(record.get("completion"), str)
    ):
        return Example(record["prompt"] + record["completion"], category, prompt=record["prompt"])
    raise BadRecord(
        f'expected an object with a "text" string or "prompt" and "completion" strings, found {describe(record, "text", "prompt", "completion")}'
    )
