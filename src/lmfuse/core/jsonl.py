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
    if not readable_file(path):
        raise InputDataError(f"{path}: no such file; expected a JSONL file of {what}s, one per line")
    items: list[T] = []
    problems: list[str] = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        where = f"{path}:{n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{where}:{utf8_column(raw, exc)}: {not_utf8(raw, exc)}")
            continue
        if not line.strip():
            continue
        try:
            items.append(parse(json.loads(line), n))
        except json.JSONDecodeError as exc:
            problems.append(f"{where}:{exc.colno}: not valid JSON ({exc.msg}); expected a {what}")
        except BadRecord as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        more = f"\n... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise InputDataError("\n".join(problems[:MAX_SHOWN]) + more)
    if not items:
        raise InputDataError(f"{path}: expected at least one {what}, found none")
    return items


def utf8_column(raw: bytes, exc: UnicodeDecodeError) -> int:
    """1-based character column of the first bad byte of ``raw``."""
    return len(raw[: exc.start].decode("utf-8", "replace")) + 1


def not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not UTF-8 (byte 0x{raw[exc.start]:02x}); re-encode the file as UTF-8"


def read_text(path: str | Path, what: str = "file") -> str:
    """A whole text file as UTF-8; a bad byte raises ``InputDataError`` naming file:line:column."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        col = len(raw[start : exc.start].decode("utf-8", "replace")) + 1
        raise InputDataError(
            f"{path}:{line}:{col}: {what} is not UTF-8 (byte 0x{raw[exc.start]:02x}); re-encode it as UTF-8"
        ) from None


_JSON_TYPES = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
               dict: "an object", type(None): "null"}  # fmt: skip


def describe(record: Any, *fields: str) -> str:
    """Short description of a bad record for messages: its keys (and the JSON type of each of ``fields``
    it has), or its type."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}"
    types = [
        f'"{f}" is {_JSON_TYPES.get(type(record[f]), type(record[f]).__name__)}'
        for f in fields
        if f in record
    ]
    return f"keys {sorted(record)}" + (f" ({', '.join(types)})" if types else "")


def readable_file(path: str | Path) -> bool:
    """A file to read: a regular file or a pipe such as bash's ``<(...)``, not a directory."""
    p = Path(path)
    return p.exists() and not p.is_dir()
