"""Run EoT or MoA over a question file: concurrent questions, results appended as they finish, resumable.

Input JSONL: one ``{"id": ..., "question": ..., "answer": ...}`` per line (``id`` defaults to
``line-N``; ``answer``, the expected one, is optional and enables accuracy). Output JSONL: one
``ExchangeResult.summary()`` per question plus ``expected`` and ``correct``, appended and flushed as each
question finishes, so a re-run skips the ids already answered (a torn last line from a crash is dropped;
questions whose calls failed are retried). One run at a time writes an output (``output_lock``).
The recipe is written beside the output (``<output>.recipe.yaml``); resuming with a different recipe
is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmfuse import __version__
from lmfuse.core.atomic import atomic_write_text, check_writable, output_lock, same_file
from lmfuse.core.config import dump_yaml
from lmfuse.core.jsonl import BadRecord, describe, read_records, read_text
from lmfuse.errors import CheckpointError, ConfigError, InputDataError
from lmfuse.exchange.result import ExchangeResult, Solver
from lmfuse.exchange.transcript import turns_to_jsonl


@dataclass
class Item:
    id: str
    question: str
    expected: str | None = None


@dataclass
class RunSummary:
    """What one run did (questions skipped because already answered are not counted in the totals)."""

    total: int = 0
    skipped: int = 0
    answered: int = 0
    scored: int = 0
    correct: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_calls: int = 0
    truncated: int = 0
    """Replies cut at ``max_tokens`` (``finish_reason`` ``length``)."""
    seconds: float = 0.0
    stops: Counter = field(default_factory=Counter)
    failed_questions: int = 0
    """Questions with a call that failed after its retries; a re-run retries them."""

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def read_questions(path: str | Path) -> list[Item]:
    """Parse a question JSONL file; every bad line is reported with its number."""
    seen: set[str] = set()

    def parse(row, line: int) -> Item:
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise BadRecord(f'expected an object with a "question" string, found {describe(row, "question")}')
        raw_id = row.get("id", f"line-{line}")
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise BadRecord(
                f'expected "id" to be a string or an integer, found {describe({"id": raw_id}, "id")}'
            )
        qid = str(raw_id)
        if qid in seen:
            raise BadRecord(f"duplicate id {qid!r}; ids must be unique")
        seen.add(qid)
        expected = row.get("answer")
        return Item(qid, row["question"], None if expected is None else str(expected))

    return read_records(path, parse, '{"question": ...} record')


def zoo_questions(per_op: int) -> list[Item]:
    """The zoo's held-out questions (``Q: 37+48= A:``) with their answers."""
    from lmfuse import zoo

    return [Item(q.id, q.prompt, q.answer) for q in zoo.eval_set(per_op)]


def answered_ids(output: Path) -> set[str]:
    """Ids already answered in ``output``, a results file of an earlier run; ``{}`` if there is none.

    Lines of questions whose calls failed are removed from the file so that this run retries them; so is
    a torn last line (a crash mid-write: no newline yet). Anything else that is not a result line is
    refused, and the file left as it was: it is not ours to edit.
    """
    if not output.exists():
        return set()
    if not output.is_file():
        raise CheckpointError(f"output {output} is not a file; expected a results JSONL path")
    text = read_text(output, "results file")
    lines = text.splitlines()
    torn = bool(lines) and not text.endswith("\n") and lines[-1].startswith('{"id": ')
    ids, keep = set(), []
    for n, line in enumerate(lines, 1):
        row = _result_row(line)
        if row is None:
            if n == len(lines) and torn:
                continue
            raise InputDataError(
                f"{output}:{n}: not an lmfuse exchange/moa result line; -o names a file that is not a "
                "results file of an earlier run: choose another output (or --overwrite to replace it)"
            )
        if not row["failures"]:
            ids.add(str(row["id"]))
            keep.append(line)
    if len(keep) != len(lines):
        atomic_write_text(output, "".join(f"{line}\n" for line in keep))
    return ids


def _result_row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if (
        isinstance(row, dict)
        and {"id", "stop", "answer"} <= row.keys()
        and isinstance(row.get("failures"), list)
    ):
        return row
    return None


def check_paths(output: Path, inputs: Sequence[str | Path | None], transcript: str | Path | None) -> None:
    """Refuse an output that is also an input or the transcript, or cannot be written."""
    for given in inputs:
        if given is not None and same_file(output, given):
            raise ConfigError(f"-o {output} is also an input ({given}); choose another output path")
    if transcript is not None:
        if same_file(output, transcript):
            raise ConfigError(f"--transcript {transcript} is the -o file; give them different paths")
        check_writable(transcript)
        if Path(transcript).is_dir():
            raise CheckpointError(f"--transcript {transcript} is a directory; expected a file path")
    if output.is_dir():
        raise CheckpointError(f"output {output} is a directory; expected a results JSONL path")
    check_writable(output)


def check_recipe(output: Path, config: Any, source: str, overwrite: bool) -> None:
    """Write ``<output>.recipe.yaml``; refuse to resume into an output made with another recipe."""
    recipe = output.with_name(output.name + ".recipe.yaml")
    text = f"# lmfuse {__version__}; questions: {source}\n{dump_yaml(config)}"
    if overwrite:
        output.unlink(missing_ok=True)
    elif output.is_file() and recipe.is_file() and _body(recipe.read_text(encoding="utf-8")) != _body(text):
        raise ConfigError(
            f"{output} was produced with a different recipe ({recipe}); "
            "pass another -o, or --overwrite to start again"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recipe, text)


def _body(recipe_text: str) -> str:
    return recipe_text.split("\n", 1)[-1]


def run_questions(
    solver: Solver,
    items: Sequence[Item],
    output: str | Path,
    transcript: str | Path | None = None,
    concurrency: int = 8,
    on_done: Callable[[ExchangeResult], None] | None = None,
) -> RunSummary:
    """Answer every item not yet in ``output``, ``concurrency`` questions at a time."""
    output = Path(output)
    with output_lock(output), output_lock(transcript) if transcript else nullcontext():
        return _run_locked(solver, items, output, transcript, concurrency, on_done)


def _run_locked(solver, items, output: Path, transcript, concurrency: int, on_done) -> RunSummary:
    done = answered_ids(output)
    todo = [it for it in items if it.id not in done]
    summary = RunSummary(total=len(items), skipped=len(items) - len(todo))
    start = time.perf_counter()
    with (
        open(output, "a", encoding="utf-8") as out,
        open(transcript, "a", encoding="utf-8") if transcript else nullcontext() as tr,
    ):

        def record(item: Item, result: ExchangeResult) -> None:
            row = result.summary()
            row["expected"] = item.expected
            row["correct"] = None if item.expected is None else result.answer == item.expected
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            if tr is not None:
                turns_to_jsonl(result.turns, tr)
                tr.flush()
            _count(summary, result, row["correct"])
            if on_done:
                on_done(result)

        asyncio.run(_solve_all(solver, todo, concurrency, record))
    summary.seconds = time.perf_counter() - start
    return summary


async def _solve_all(solver: Solver, items: Sequence[Item], concurrency: int, record) -> None:
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Item) -> None:
        async with sem:
            result = await solver.solve(item.question, item.id)
        record(item, result)

    try:
        await asyncio.gather(*(one(it) for it in items))
    finally:
        await solver.aclose()


def _count(summary: RunSummary, result: ExchangeResult, correct: bool | None) -> None:
    summary.answered += 1
    summary.calls += result.calls
    summary.prompt_tokens += result.prompt_tokens
    summary.completion_tokens += result.completion_tokens
    summary.failed_calls += len(result.failures)
    summary.truncated += result.truncated
    summary.failed_questions += bool(result.failures)
    summary.stops[result.stop] += 1
    if correct is not None:
        summary.scored += 1
        summary.correct += bool(correct)
