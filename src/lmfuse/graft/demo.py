"""Demo rows: depth up-scaling of the zoo's base model, before and after a short continued training."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow
from lmfuse.zoo.questions import OPS, held_out_pairs, sample_question

DROP = 1
STEPS = 100


def write_training_text(path: str | Path, n: int, seed: int = 0) -> Path:
    """``n`` zoo training lines (``Q: 37+48= A: 7+8=15,3+4+1=8 so 85``) over all operations, never a
    held-out question."""
    rng, held_out = random.Random(seed), held_out_pairs()
    lines: list[str] = []
    while len(lines) < n:
        q = sample_question(OPS[len(lines) % len(OPS)], rng)
        if (q.op, q.a, q.b) not in held_out:
            lines.append(q.text)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    """DUS of ``base`` (n layers → 2(n - 1)), evaluated as grafted and after ``STEPS`` training steps."""
    from lmfuse.core.loading import load_model
    from lmfuse.graft.inmemory import graft_model
    from lmfuse.graft.recipe import dus_recipe
    from lmfuse.graft.train import TrainConfig, train

    start = time.perf_counter()
    base, tok = ctx.member("base")
    n = base.config.num_hidden_layers
    grafted = graft_model(base, dus_recipe("base", n, DROP))
    layers = grafted.config.num_hidden_layers
    after_graft = zoo.evaluate(zoo.hf_generate_fn(grafted, tok), ctx.questions)
    rows = [
        DemoRow(
            f"graft: DUS base {n}->{layers} layers",
            after_graft.row(),
            time.perf_counter() - start,
            note="layers [0,n-1) + [1,n), no training",
        )
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lmfuse-graft-demo-") as tmp:
        data = write_training_text(Path(tmp) / "train.txt", 4000)
        config = TrainConfig(steps=STEPS, lr=1e-4, batch_size=16, seq_len=32, warmup_steps=5, log_every=10)
        result = train(grafted, [data], Path(tmp) / "trained", config, tokenizer=tok)
        trained = load_model(result.out, dtype="float32")
    after_train = zoo.evaluate(zoo.hf_generate_fn(trained, tok), ctx.questions)
    rows.append(
        DemoRow(
            f"graft: DUS + {STEPS} training steps",
            after_train.row(),
            time.perf_counter() - start,
            note=f"lmfuse train, loss {result.first_loss:.2f}->{result.last_loss:.2f}",
        )
    )
    return rows
