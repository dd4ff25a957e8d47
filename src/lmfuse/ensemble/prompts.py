"""Prompt files for ``lmfuse ensemble --input``: JSONL records with a ``prompt`` field."""

from __future__ import annotations

import json
from pathlib import Path

from lmfuse.core.jsonl import BadRecord, describe, read_records


def read_prompts(path: str | Path) -> list[dict]:
    """Every record of a JSONL file; each must be an object with a string ``prompt``. All bad lines are
    reported together, naming the file and line."""

    def parse(record, line: int) -> dict:
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise BadRecord(f'expected an object with a string "prompt", found {describe(record, "prompt")}')
        return record

    return read_records(path, parse, '{"prompt": ...} record')


def write_completions(
    path: str | Path, records: list[dict], completions: list[str], overwrite: bool = False
) -> None:
    """The input records with a ``completion`` field added, as JSONL, written atomically; an existing
    ``path`` is refused unless ``overwrite``."""
    from lmfuse.core.atomic import atomic_open

    with atomic_open(path, overwrite=overwrite) as fh:
        for r, c in zip(records, completions, strict=True):
            fh.write(json.dumps({**r, "completion": c}, ensure_ascii=False) + "\n")
