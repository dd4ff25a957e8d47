"""Run EoT or MoA over a question file: concurrent questions, results appended as they finish, resumable.

Input JSONL: one ``{"id": ..., "question": ..., "answer": ...}`` per line (``id`` defaults to
``line-N``; ``answer``, the expected one, is optional and enables accuracy). Output JSONL: one
``ExchangeResult.summary()`` per question plus ``expected`` and ``correct``, appended and flushed as each
question finishes, so a re-run skips the ids already there (a torn last line from a crash is dropped).
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
from lmfuse.core.atomic import atomic_write_text
from lmfuse.core.config import dump_yaml
from lmfuse.core.jsonl import BadRecord, describe, read_records
from lmfuse.errors import ConfigError, InputDataError
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

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def read_questions(path: str | Path) -> list[Item]:
    """Parse a question JSONL file; every bad line is reported with its number."""
    seen: set[str] = set()

    def parse(row, line: int) -> Item:
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise BadRecord(f'expected an object with a "question" string, found {describe(row)}')
        qid = str(row.get("id", f"line-{line}"))
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
    """Ids already in ``output``; a torn (unparsable) last line is removed from the file."""
    if not output.is_file():
        return set()
    lines = output.read_text(encoding="utf-8").splitlines()
    ids, keep = set(), []
    for n, line in enumerate(lines, 1):
        try:
            ids.add(str(json.loads(line)["id"]))
            keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            if n != len(lines):
                raise InputDataError(f"{output}:{n}: not a result line; use a new output file") from None
    if len(keep) != len(lines):
        atomic_write_text(output, "".join(f"{line}\n" for line in keep))
    return ids


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
    summary.stops[result.stop] += 1
    if correct is not None:
        summary.scored += 1
        summary.correct += bool(correct)
