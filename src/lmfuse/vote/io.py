"""JSONL inputs and outputs of ``lmfuse vote``: two input layouts, bad-line reports, atomic output.

Layouts:

- **one file**, each line ``{"id": ..., "candidates": ["...", ...]}`` with an optional ``"sources"``
  list (one name per candidate);
- **several files, one per model** (as the WSDM Cup solution stored its runs), aligned by ``id``: each
  line ``{"id": ..., "answer": "..."}`` (the text field is the first of ``TEXT_FIELDS`` present, or the
  one named) or ``{"id": ..., "candidates": [...]}`` for several samples of that model. Each candidate's
  source is the file's stem (``name#k`` for the k-th sample).

Blank lines are ignored. A bad line raises ``InputDataError`` naming file, line and problem, or, with
``skip_bad``, is returned in the list of ``BadLine`` and its question left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmfuse.core.atomic import atomic_open
from lmfuse.core.jsonl import not_utf8, readable_file, utf8_column
from lmfuse.errors import InputDataError

TEXT_FIELDS = ("answer", "response", "output", "text", "completion", "prediction")


@dataclass
class Question:
    """One question's candidates, with where each came from."""

    id: str | int
    candidates: list[str]
    sources: list[str] | None = None


@dataclass
class BadLine:
    """A skipped input line (``line`` None for a problem that is not on one line)."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}{f':{self.line}' if self.line else ''}: {self.message}"


def _parse(raw: str, text_field: str | None, single: bool) -> tuple[str | int, list[str], list | None]:
    """One JSON line → (id, candidates, sources); raises ValueError with what was wrong."""
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    shape = '{"id": ..., "candidates": [...]}' if single else '{"id": ..., "answer": "..."}'
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object like {shape}, found {type(record).__name__}")
    if "id" not in record:
        raise ValueError(f'missing "id"; each line must look like {shape}')
    qid = record["id"]
    if isinstance(qid, bool) or not isinstance(qid, (str, int)):
        raise ValueError(f'"id" must be a string or an integer, found {type(qid).__name__}')
    if single or "candidates" in record:
        cands = record.get("candidates")
        if not isinstance(cands, list) or not cands:
            raise ValueError(f'"candidates" must be a non-empty list of strings, found {cands!r:.60}')
    else:
        field = text_field or next((f for f in TEXT_FIELDS if f in record), None)
        if field is None or field not in record:
            want = f'"{text_field}"' if text_field else f"one of {', '.join(TEXT_FIELDS)}"
            raise ValueError(f"no text field: expected {want} (choose with --field), found {sorted(record)}")
        cands = [record[field]]
    for i, c in enumerate(cands):
        if not isinstance(c, str):
            raise ValueError(f"candidate {i} must be a string, found {type(c).__name__} ({c!r:.40})")
    sources = record.get("sources") if single else None
    if sources is not None and (
        not isinstance(sources, list)
        or len(sources) != len(cands)
        or not all(isinstance(s, str) for s in sources)
    ):
        raise ValueError(f'"sources" must be a list of {len(cands)} strings, one per candidate')
    return qid, cands, sources


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"column {utf8_column(line, exc)}: {not_utf8(line, exc)}") from None


def _records(path: Path, text_field: str | None, single: bool, skip_bad: bool, bad: list[BadLine]):
    """Yield (line number, id, candidates, sources) of one file."""
    if not readable_file(path):
        raise InputDataError(f"{path}: no such input file")
    seen: dict[str | int, int] = {}
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                raw = _decode(line)
                if not raw.strip():
                    continue
                qid, cands, sources = _parse(raw, text_field, single)
                if qid in seen:
                    raise ValueError(f"duplicate id {qid!r} (first on line {seen[qid]})")
            except ValueError as exc:
                if not skip_bad:
                    raise InputDataError(f"{path}:{lineno}: {exc}") from None
                bad.append(BadLine(str(path), lineno, str(exc)))
                continue
            seen[qid] = lineno
            yield lineno, qid, cands, sources


def read_questions(
    paths: Sequence[str | Path], text_field: str | None = None, skip_bad: bool = False
) -> tuple[list[Question], list[BadLine]]:
    """Questions from one file (candidates per line) or several aligned per-model files."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputDataError("no input files given")
    bad: list[BadLine] = []
    if len(paths) == 1:
        questions = [Question(q, c, s) for _, q, c, s in _records(paths[0], text_field, True, skip_bad, bad)]
        return questions, bad
    names = [p.stem if [x.stem for x in paths].count(p.stem) == 1 else str(p) for p in paths]
    per_file = [{q: c for _, q, c, _ in _records(p, text_field, False, skip_bad, bad)} for p in paths]
    order = list(dict.fromkeys(q for table in per_file for q in table))
    questions = []
    for qid in order:
        missing = [str(p) for p, table in zip(paths, per_file, strict=True) if qid not in table]
        if missing:
            message = f"id {qid!r} is missing from {', '.join(missing)}; every model file needs every id"
            if not skip_bad:
                raise InputDataError(message)
            bad.append(BadLine(missing[0], None, message))
            continue
        cands, sources = [], []
        for name, table in zip(names, per_file, strict=True):
            texts = table[qid]
            cands += texts
            sources += [name] if len(texts) == 1 else [f"{name}#{k}" for k in range(len(texts))]
        questions.append(Question(qid, cands, sources))
    return questions, bad


def write_jsonl_atomic(path: str | Path, records: Iterable[dict], overwrite: bool = False) -> int:
    """Write one JSON object per line via a temporary file renamed into place; returns the count.

    On any error (or Ctrl-C) the temporary file is removed and ``path`` is left as it was.
    """
    count = 0
    with atomic_open(path, overwrite=overwrite) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
