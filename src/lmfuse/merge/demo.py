"""Demo rows: the three zoo specialists (MLP-only fine-tunes of ``base``) merged over ``base`` with
linear, task arithmetic, TIES and DARE-TIES, and a recipe found by a short merge search."""

from __future__ import annotations

import time

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow, against_best

SEARCH_BUDGET = 8
"""Merges the demo's search evaluates (small, so the demo stays quick)."""


def specialist_recipe(method: str, **params) -> dict:
    """A mergekit-format recipe of ``add``, ``sub``, ``mul`` over ``base`` (plain data)."""
    models = [{"model": f"zoo:{name}", "parameters": dict(params)} for name in zoo.SPECIALISTS]
    data = {"merge_method": method, "models": models}
    if method != "linear":
        data["base_model"] = "zoo:base"
    return data


RECIPES = {
    "linear": specialist_recipe("linear", weight=1.0),
    "task_arithmetic": specialist_recipe("task_arithmetic", weight=1.0),
    "ties": specialist_recipe("ties", weight=1.0, density=0.5),
    "dare_ties": specialist_recipe("dare_ties", weight=1.0, density=0.5),
}
NOTES = {
    "linear": "mean of the 3 specialists",
    "task_arithmetic": "base + sum of the 3 task vectors",
    "ties": "density 0.5, sign election",
    "dare_ties": "density 0.5, seed 0",
}


def _fuses(recipe: dict) -> tuple[str, ...]:
    """Zoo members a recipe reads (``zoo:NAME``), base first."""
    refs = [recipe.get("base_model", "")] + [m["model"] for m in recipe["models"]]
    return tuple(r.removeprefix("zoo:") for r in refs if r.startswith("zoo:"))


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    """Each merge built in memory and scored on the demo's held-out questions."""
    import torch

    from lmfuse.merge.inmemory import merged_model
    from lmfuse.merge.recipe import recipe_from_dict
    from lmfuse.merge.search import SearchConfig, search

    _, tok = ctx.member("base")
    opened: dict = {}
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they save
    try:
        for method, data in RECIPES.items():
            start = time.perf_counter()
            model = merged_model(recipe_from_dict(data), opened=opened)
            result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
            fuses = _fuses(data)
            rows.append(
                DemoRow(f"merge: {method}", result.row(), time.perf_counter() - start, note=NOTES[method],
                        fuses=fuses, below=against_best(ctx, fuses, result.predictions))
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    found = search(recipe_from_dict(RECIPES["ties"]), SearchConfig(budget=SEARCH_BUDGET, per_op=8))
    model = merged_model(found.best_recipe, opened=opened)
    result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
    rows.append(
        DemoRow(
            "merge: ties, searched",
            result.row(),
            time.perf_counter() - start,
            note=f"CMA-ES, {found.evaluations} merges; on its 24 tuning questions "
            f"{found.start_score:.2f}->{found.best_score:.2f}",
            fuses=_fuses(RECIPES["ties"]),
            below=against_best(ctx, _fuses(RECIPES["ties"]), result.predictions),
        )
    )
    return rows
