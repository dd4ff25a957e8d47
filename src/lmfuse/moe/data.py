"""Text data for router training and inspection: JSONL records ``{"text": ..., "category": ...}`` or
plain text, one example per line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmfuse.errors import InputDataError


@dataclass
class Example:
    text: str
    category: str | None = None


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
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputDataError(f'{path}:{n}: expected an object with a "text" string, found {line[:60]!r}')
        category = record.get("category")
        examples.append(Example(record["text"], None if category is None else str(category)))
    if not examples:
        raise InputDataError(f"{path}: no examples (expected JSONL records or non-empty text lines)")
    return examples
