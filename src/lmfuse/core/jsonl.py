"""Reading JSONL input files: every bad line reported at once, by file and line number.

``read_records(path, parse, what)`` parses each non-blank line as JSON and hands it to
``parse(record, line_number)``, which returns the item or raises ``BadRecord`` saying what it expected and what
it found. All problems are collected and raised together as one ``InputDataError`` (the first 20, then a
count), so a user fixes a file in one pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lmfuse.errors import InputDataError

T = TypeVar("T")
MAX_SHOWN = 20


class BadRecord(ValueError):
    """Raised by a ``parse`` callback: the message says what was expected and what was found."""


def read_records(path: str | Path, parse: Callable[[Any, int], T], what: str) -> list[T]:
    """Parse every non-blank line of ``path``; ``what`` describes one record for the error messages
    (e.g. ``'{"prompt": ...} record'``). An empty file is an error too."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no such file; expected a JSONL file of {what}s, one per line")
    items: list[T] = []
    problems: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            items.append(parse(json.loads(line), n))
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg}); expected a {what}")
        except BadRecord as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        more = f"\n... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise InputDataError("\n".join(problems[:MAX_SHOWN]) + more)
    if not items:
        raise InputDataError(f"{path}: expected at least one {what}, found none")
    return items


def describe(record: Any) -> str:
    """Short description of a bad record for messages: its keys, or its type."""
    return f"keys {sorted(record)}" if isinstance(record, dict) else f"a {type(record).__name__}"
