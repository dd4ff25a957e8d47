"""Prompt files for ``lmfuse ensemble --input``: JSONL records with a ``prompt`` field."""

from __future__ import annotations

import json
from pathlib import Path

from lmfuse.errors import InputDataError


def read_prompts(path: str | Path) -> list[dict]:
    """Every record of a JSONL file; each must be an object with a string ``prompt``. All bad lines are
    reported together, naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            f'{path}: no such file; expected a JSONL file with one {{"prompt": ...}} per line'
        )
    records, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{n}: expected a JSON object, found invalid JSON ({exc.msg})")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
            found = type(rec).__name__ if not isinstance(rec, dict) else f"keys {sorted(rec)}"
            problems.append(f'{path}:{n}: expected an object with a string "prompt", found {found}')
            continue
        records.append(rec)
    if problems:
        raise InputDataError(
            "\n".join(problems[:20]) + (f"\n... and {len(problems) - 20} more" if len(problems) > 20 else "")
        )
    if not records:
        raise InputDataError(f'{path}: expected at least one {{"prompt": ...}} record, found none')
    return records


def write_completions(path: str | Path, records: list[dict], completions: list[str]) -> None:
    """The input records with a ``completion`` field added, as JSONL, written atomically."""
    from lmfuse.core.checkpoint import atomic_write_text

    lines = [
        json.dumps({**r, "completion": c}, ensure_ascii=False)
        for r, c in zip(records, completions, strict=True)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")
