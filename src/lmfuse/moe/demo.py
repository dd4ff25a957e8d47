"""Demo rows: an MoE built from the zoo specialists ``add``, ``sub``, ``mul`` with ``hidden`` routers from
per-operation prompts, then after a brief ``train-router`` on fresh training questions (never the
held-out ones), then the same experts with prompt-level routing (a prompt router trained on fresh
questions picks one specialist per question), then the token-routed MoE after train-router and ``moe train``
(Branch-Train-MiX: experts and routers fine-tuned together).

The specialists are MLP-only fine-tunes of ``base`` (attention, norms and embeddings frozen), so the
shared weights are exactly the base's. Token-level routing is what holds the first two rows back:
positions before the operator cannot know which specialist the question needs, so even well-trained
routers mix experts where each specialist alone would use its own MLP everywhere (measured: the MoE stays
below the best specialist on its own operation). A prompt routed with weight 1 to specialist X is
specialist X exactly, so prompt-level routing reaches each specialist's score on its own operation.

Everything is seeded (question draws, ``torch``), and router training is full-batch or seeded, so the
rows are the same on every run with the same thread count.
"""

from __future__ import annotations

import random
import tempfile
import time

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow, against_best
from lmfuse.zoo.questions import held_out_pairs

PROMPTS_PER_OP = 8
TRAIN_PER_OP = 256
TRAIN_STEPS = 50
TRAIN_BATCH = 16
"""On zoo v2, 50 x 16 reaches what 50 x 32 does (0.67) in half the time; 20 x 16 stays at 0.57."""
PROMPT_TRAIN_PER_OP = 128
"""Prompt-router training examples per operation (each costs one forward per expert, once)."""
PROMPT_TRAIN_STEPS = 30
BTX_STEPS, BTX_LR, BTX_BATCH = 20, 1e-3, 16
"""``moe train`` after train-router: experts and routers, attention and embeddings frozen. On zoo v2 this
reached 0.79 in 20 steps where the bare build needed 60 steps for 0.71 (and 30 steps for 0.67)."""


def training_questions(per_op: int, seed: int) -> dict[str, list[zoo.Question]]:
    """Fresh questions per operation, excluding every held-out evaluation question."""
    held_out = held_out_pairs()
    rng = random.Random(seed)
    out: dict[str, list[zoo.Question]] = {}
    for op in zoo.SPECIALISTS:
        picked: list[zoo.Question] = []
        while len(picked) < per_op:
            q = zoo.sample_question(op, rng)
            if (q.op, q.a, q.b) not in held_out:
                picked.append(q)
        out[op] = picked
    return out


def zoo_recipe(prompts: dict[str, list[zoo.Question]], routing: str = "token", k: int = 2):
    """The build recipe: base + the three specialists, hidden routers, top-``k``."""
    from lmfuse.moe.recipe import BuildRecipe, ExpertSpec

    experts = [ExpertSpec(str(zoo.path(op)), [q.prompt for q in prompts[op]]) for op in zoo.SPECIALISTS]
    return BuildRecipe(
        base=str(zoo.path("base")), experts=experts, num_experts_per_tok=k, router_init="hidden",
        routing=routing,
    )  # fmt: skip


def _row(ctx: DemoContext, name: str, result: zoo.EvalResult, seconds: float, note: str) -> DemoRow:
    """A row that fuses the three specialists: ``run_demo`` adds the best of them, and why if below it."""
    fuses = tuple(zoo.SPECIALISTS)
    below = against_best(ctx, fuses, result.predictions)
    return DemoRow(name, result.row(), seconds, note=note, fuses=fuses, below=below)


def _examples(per_op: int, seed: int):
    from lmfuse.moe.data import Example

    fresh = training_questions(per_op, seed=seed).values()
    return [Example(q.text, q.op, prompt=q.prompt) for qs in fresh for q in qs]


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    import torch

    torch.manual_seed(0)
    ctx.best_member(zoo.SPECIALISTS)  # evaluates any specialist not evaluated yet, outside the rows' times
    prompts = training_questions(PROMPTS_PER_OP, seed=1)
    with tempfile.TemporaryDirectory(prefix="lmfuse-moe-demo-") as tmp:
        rows, routed = _token_rows(ctx, prompts, tmp)
        rows.append(_prompt_row(ctx, prompts, tmp))
        rows.append(_btx_row(ctx, *routed, tmp))
    return rows


def _token_rows(ctx: DemoContext, prompts, tmp: str) -> tuple[list[DemoRow], tuple]:
    """The token-routed build before and after train-router; also ``(model, tokenizer)`` after it."""
    from lmfuse.core.loading import load_model_and_tokenizer
    from lmfuse.moe.build import build_moe
    from lmfuse.moe.train_router import TrainRouterConfig, train_router

    start = time.perf_counter()
    built = build_moe(zoo_recipe(prompts), f"{tmp}/moe")
    model, tok = load_model_and_tokenizer(built.out, dtype="float32")
    result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
    note = f"{built.architecture} top-2 of 3, hidden routers; {built.active_params:,}/{built.total_params:,} params active"
    rows = [_row(ctx, "moe add+sub+mul (hidden)", result, time.perf_counter() - start, note)]

    start = time.perf_counter()
    # the zoo learned answers only (prompt tokens were masked): train the routers the same way
    data = _examples(TRAIN_PER_OP, seed=2)
    trained = train_router(model, tok, data, TrainRouterConfig(steps=TRAIN_STEPS, batch_size=TRAIN_BATCH))
    result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
    note = f"token routers only, {len(trained.losses)} steps, loss {trained.losses[0]:.3f} -> {trained.losses[-1]:.3f}"
    rows.append(_row(ctx, "moe + train-router", result, time.perf_counter() - start, note))
    return rows, (model, tok)


def _prompt_row(ctx: DemoContext, prompts, tmp: str) -> DemoRow:
    from lmfuse.moe.build import build_moe
    from lmfuse.moe.prompt import load_model_and_tokenizer
    from lmfuse.moe.train_prompt_router import train_prompt_router
    from lmfuse.moe.train_router import TrainRouterConfig

    start = time.perf_counter()
    built = build_moe(zoo_recipe(prompts, routing="prompt", k=1), f"{tmp}/moe-prompt")
    model, tok = load_model_and_tokenizer(built.out, dtype="float32")
    data = _examples(PROMPT_TRAIN_PER_OP, seed=2)
    trained = train_prompt_router(model, tok, data, TrainRouterConfig(steps=PROMPT_TRAIN_STEPS))
    result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
    note = (
        f"prompt-level top-1 of 3, router trained on {len(data)} prompts, loss "
        f"{trained.losses[0]:.3f} -> {trained.losses[-1]:.3f}"
    )
    return _row(ctx, "moe prompt-routed + train-router", result, time.perf_counter() - start, note)


def _btx_row(ctx: DemoContext, model, tok, tmp: str) -> DemoRow:
    """Branch-Train-MiX: the token-routed MoE after train-router, experts and routers fine-tuned together."""
    import json

    from lmfuse.moe.train import MoETrainConfig, moe_train

    start = time.perf_counter()
    data = f"{tmp}/btx.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for e in _examples(TRAIN_PER_OP, seed=3):
            fh.write(json.dumps({"prompt": e.prompt, "completion": e.text[len(e.prompt) :]}) + "\n")
    cfg = MoETrainConfig(
        steps=BTX_STEPS,
        lr=BTX_LR,
        batch_size=BTX_BATCH,
        log_every=BTX_STEPS,
        freeze=["attention", "embeddings"],
    )
    trained = moe_train(model, [data], f"{tmp}/btx", cfg, tokenizer=tok)  # in place; ends in eval mode
    result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
    note = (
        f"experts + token routers (attention, embeddings frozen), {BTX_STEPS} steps x {BTX_BATCH}, "
        f"loss {trained.first_loss:.3f} -> {trained.last_loss:.3f}"
    )
    return _row(ctx, "moe + train-router + moe train", result, time.perf_counter() - start, note)
