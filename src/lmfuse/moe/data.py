"""Text data for router training and inspection: JSONL records ``{"text": ..., "category": ...}`` or
``{"prompt": ..., "completion": ..., "category": ...}`` (training then learns the completion only), or
plain text, one example per line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
    if not path.is_file():
        raise InputDataError(f"data file not found: {path}")
    examples = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            examples.append(Example(line))
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputDataError(f"{path}:{n}: not valid JSON ({exc})") from None
        examples.append(_record(record, f"{path}:{n}", line))
    if not examples:
        raise InputDataError(f"{path}: no examples (expected JSONL records or non-empty text lines)")
    return examples


def _record(record, where: str, line: str) -> Example:
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
    raise InputDataError(
        f'{where}: expected an object with a "text" string or "prompt" and "completion" strings, found {line[:60]!r}'
    )
