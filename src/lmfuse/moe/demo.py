"""Demo rows: an MoE built from the zoo specialists ``add``, ``sub``, ``mul`` with ``hidden`` routers from
per-operation prompts, then after a brief ``train-router`` on fresh training questions (never the
held-out ones).

The specialists are MLP-only fine-tunes of ``base`` (attention, norms and embeddings frozen), so the
shared weights are exactly the base's. What remains is token-level routing: positions before the
operator cannot know which specialist the question needs, so even well-trained routers mix experts
where each specialist alone would use its own MLP everywhere (measured: the MoE stays below the best
specialist on its own operation).
"""

from __future__ import annotations

import random
import tempfile
import time

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow
from lmfuse.zoo.questions import held_out_pairs

PROMPTS_PER_OP = 8
TRAIN_PER_OP = 256
TRAIN_STEPS = 50


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


def zoo_recipe(prompts: dict[str, list[zoo.Question]]):
    """The build recipe: base + the three specialists, hidden routers, top-2."""
    from lmfuse.moe.recipe import BuildRecipe, ExpertSpec

    experts = [ExpertSpec(str(zoo.path(op)), [q.prompt for q in prompts[op]]) for op in zoo.SPECIALISTS]
    return BuildRecipe(
        base=str(zoo.path("base")), experts=experts, num_experts_per_tok=2, router_init="hidden"
    )


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    from lmfuse.core.loading import load_model_and_tokenizer
    from lmfuse.moe.build import build_moe
    from lmfuse.moe.data import Example
    from lmfuse.moe.train_router import TrainRouterConfig, train_router

    rows = []
    prompts = training_questions(PROMPTS_PER_OP, seed=1)
    with tempfile.TemporaryDirectory(prefix="lmfuse-moe-demo-") as tmp:
        start = time.perf_counter()
        built = build_moe(zoo_recipe(prompts), f"{tmp}/moe")
        model, tok = load_model_and_tokenizer(built.out, dtype="float32")
        result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
        note = f"{built.architecture} top-2 of 3, hidden routers; {built.active_params:,}/{built.total_params:,} params active"
        rows.append(DemoRow("moe add+sub+mul (hidden)", result.row(), time.perf_counter() - start, note=note))

        start = time.perf_counter()
        # the zoo learned answers only (prompt tokens were masked): train the routers the same way
        fresh = training_questions(TRAIN_PER_OP, seed=2).values()
        data = [Example(q.text, q.op, prompt=q.prompt) for qs in fresh for q in qs]
        trained = train_router(model, tok, data, TrainRouterConfig(steps=TRAIN_STEPS, batch_size=32))
        result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
        note = f"routers only, {len(trained.losses)} steps, loss {trained.losses[0]:.3f} -> {trained.losses[-1]:.3f}"
        rows.append(DemoRow("moe + train-router", result.row(), time.perf_counter() - start, note=note))
    return rows
