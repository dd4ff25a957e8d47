"""Demo rows: depth up-scaling (DUS) of the zoo's base model, before and after continued training,
beside the base given the same training (so that what the extra layers add is told apart from what
the extra training alone gives). The loss curves of both trainings go to ``graft_loss.png`` in the
demo's picture folder.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow, against_best
from lmfuse.zoo.questions import OPS, held_out_pairs, sample_question

DROP = 1
STEPS = 300
LR = 1e-3
BATCH = 16
LINES = 4000
"""Training records (``write_training_jsonl``); ``STEPS * BATCH`` of them are read, cycling."""
PLOT = "graft_loss.png"


def training_questions(n: int, seed: int = 0) -> list[zoo.Question]:
    """``n`` zoo questions over all operations in turn, never a held-out one."""
    rng, held_out, out = random.Random(seed), held_out_pairs(), []
    while len(out) < n:
        q = sample_question(OPS[len(out) % len(OPS)], rng)
        if (q.op, q.a, q.b) not in held_out:
            out.append(q)
    return out


def write_training_jsonl(path: str | Path, n: int, seed: int = 0) -> Path:
    """``training_questions`` as ``lmfuse train`` prompt + completion records (``Q: 37+48= A:`` and
    `` 7+8=15,3+4+1=8 so 85``): the answer alone is learned, as the zoo itself was trained (its prompt
    tokens were masked)."""
    records = [json.dumps({"prompt": q.prompt, "completion": q.solution})
               for q in training_questions(n, seed)]  # fmt: skip
    path = Path(path)
    path.write_text("\n".join(records) + "\n", encoding="utf-8")
    return path


def _config():
    from lmfuse.graft.train import TrainConfig

    return TrainConfig(
        steps=STEPS, lr=LR, batch_size=BATCH, seq_len=64, warmup_steps=STEPS // 20, log_every=10
    )


def _train(model, tok, tmp: Path, name: str, questions):
    """Train ``model`` on the demo text; ``(evaluation, TrainResult)`` of the trained model."""
    from lmfuse.core.loading import load_model
    from lmfuse.graft.train import train

    data = tmp / "train.jsonl"
    if not data.exists():
        write_training_jsonl(data, LINES)
    result = train(model, [data], tmp / name, _config(), tokenizer=tok)
    trained = load_model(result.out, dtype="float32")
    return zoo.evaluate(zoo.hf_generate_fn(trained, tok), questions), result


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    """DUS of ``base`` (n layers → 2(n - 1)) as grafted and after ``STEPS`` steps; base after as many."""
    from lmfuse.graft.inmemory import graft_model
    from lmfuse.graft.loss_plot import plot_losses
    from lmfuse.graft.recipe import dus_recipe

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
            fuses=("base",),
            below="untrained: the seam where the two copies meet (the next row trains it)",
        )
    ]
    with tempfile.TemporaryDirectory(prefix="lmfuse-graft-demo-") as tmp:
        start = time.perf_counter()
        dus, dus_log = _train(grafted, tok, Path(tmp), "dus", ctx.questions)
        rows.append(
            DemoRow(
                f"graft: DUS + {STEPS} training steps",
                dus.row(),
                time.perf_counter() - start,
                note=f"lmfuse train, lr {LR:g}, batch {BATCH}, loss {dus_log.first_loss:.2f}->{dus_log.last_loss:.2f}",
                fuses=("base",),
                below=against_best(ctx, ("base",), dus.predictions),
            )
        )
        start = time.perf_counter()
        again, base_log = _train(zoo.load("base")[0], tok, Path(tmp), "base", ctx.questions)
        note = f"the same {STEPS} steps on base, no DUS; loss {base_log.first_loss:.2f}->{base_log.last_loss:.2f}"
        rows.append(DemoRow(f"base + {STEPS} training steps", again.row(), time.perf_counter() - start,
                            kind="baseline", note=note))  # fmt: skip
    if ctx.plot_dir is not None:
        curves = {f"DUS {n}->{layers} layers": dus_log.losses, f"base {n} layers": base_log.losses}
        path = plot_losses(curves, ctx.plot_dir / PLOT, f"continued training, {STEPS} steps, lr {LR:g}")
        rows[1].files["loss curve"] = str(path)
    return rows
