"""Demo rows: zoo members ensembled token by token (shared tokenizer, and across tokenizers)."""

from __future__ import annotations

import contextlib
import time

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow, against_best


def _row(ctx: DemoContext, name: str, members: list[str], note: str, **kwargs) -> DemoRow:
    from lmfuse.ensemble import Ensemble

    start = time.perf_counter()
    ens = Ensemble([ctx.member(m) for m in members], **kwargs)
    result = zoo.evaluate(
        lambda prompts: ens.generate(prompts, max_new_tokens=zoo.MAX_NEW_TOKENS, batch_size=64), ctx.questions
    )
    if kwargs.get("gate"):
        note += f"; {ens.stats.ensembled_fraction:.0%} of steps ensembled"
    fuses = tuple(members)
    return DemoRow(name, result.row(), time.perf_counter() - start, note=note, fuses=fuses,
                   below=against_best(ctx, fuses, result.predictions))  # fmt: skip


@contextlib.contextmanager
def _one_thread():
    """Tiny models decode fastest on one thread; on shared cores more threads mostly contend (measured:
    these rows take ~3 s on one thread, ~60 s on two under load). The setting is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    """Specialists + base with one tokenizer (ids), then base + generalist across tokenizers (bytes)."""
    with _one_thread():
        return _rows(ctx)


def _rows(ctx: DemoContext) -> list[DemoRow]:
    have = set(zoo.names())
    rows = []
    shared = [m for m in ("base", *zoo.SPECIALISTS) if m in have]
    if len(shared) > 1:
        rows.append(_row(ctx, "ensemble " + "+".join(shared), shared, "prob mean, shared tokenizer"))
        rows.append(_row(ctx, "ensemble gated", shared, "only where base's top prob < 0.9", gate=0.9))
    if {"base", "generalist"} <= have:
        rows.append(_row(ctx, "ensemble base+generalist", ["base", "generalist"], "byte-aligned tokenizers"))
    return rows
