"""Merge search: tune a recipe's per-model (optionally per-layer) weights and densities with CMA-ES.

Evolutionary model merging (Akiba et al. 2024, "Evolutionary optimization of model merging recipes")
searches merge parameters on a task score. Here each candidate is merged in memory (``merged_state_dict``
into one preallocated model, nothing written), scored by greedy generation, and CMA-ES (Hansen 2016,
"The CMA evolution strategy: a tutorial"; the ``cmaes`` package) proposes the next ones.

The default evaluation is a small fixed subset of the zoo's held-out questions: the *last* ``per_op``
of each operation (``lmfuse demo`` scores the first 50, so a searched recipe is not scored on the
questions it was tuned on). ``eval_file`` is a JSONL of ``{"prompt": ..., "answer": ...}``: a
completion is right when, stripped, it starts with the stripped answer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmfuse.core.config import dump_yaml
from lmfuse.core.jsonl import BadRecord, describe, read_records
from lmfuse.errors import ConfigError, LmfuseError
from lmfuse.merge.recipe import MergeRecipe, recipe_from_dict
from lmfuse.zoo.evaluate import MAX_NEW_TOKENS

BOUNDS = {"weight": (0.0, 1.5), "density": (0.1, 1.0)}


@dataclass
class SearchConfig:
    """What to tune and how to score it."""

    budget: int = 24
    """Merges evaluated in all (the starting recipe included)."""
    per_layer: bool = False
    """One value per model and layer (a gradient with one entry per layer) instead of per model."""
    tune_density: bool = True
    """Also tune ``density`` for methods that have one."""
    eval_file: str | None = None
    """JSONL of prompt/answer pairs; default: the zoo's held-out questions."""
    per_op: int = 8
    """Zoo questions per operation (the last ``per_op`` of the held-out set)."""
    seed: int = 0
    sigma: float = 0.25
    """CMA-ES initial step size (the search space is weights in [0, 1.5], densities in [0.1, 1])."""
    max_new_tokens: int = MAX_NEW_TOKENS
    """Tokens generated per answer (default: the zoo's answer budget)."""
    device: str | None = None


@dataclass
class SearchResult:
    """The best recipe found and how it was found."""

    best_recipe: MergeRecipe
    best_yaml: str
    best_score: float
    start_score: float
    evaluations: int
    eval_description: str
    history: list[float] = field(default_factory=list)
    """Score of each evaluated candidate, in order."""


@dataclass
class _Dim:
    model: int
    """Index into ``recipe.models``."""
    key: str
    layer: int | None
    start: float


def _dimensions(recipe: MergeRecipe, n_layers: int, config: SearchConfig) -> list[_Dim]:
    method = recipe.method
    keys = [k for k in ("weight", "density") if k in method.model_params]
    if not config.tune_density:
        keys = [k for k in keys if k != "density"]
    if not keys:
        raise ConfigError(f"{method.name} has no weight or density to search")
    dims = []
    for i, m in enumerate(recipe.models or []):
        if method.base != "unused" and m.model == recipe.base_model:
            continue
        for key in keys:
            raw = m.parameters.get(key, recipe.parameters.get(key, method.model_params[key].default))
            start = float(raw) if isinstance(raw, int | float) else method.model_params[key].default
            lo, hi = BOUNDS[key]
            start = min(max(start, lo), hi)
            for layer in range(n_layers) if config.per_layer else [None]:
                dims.append(_Dim(i, key, layer, start))
    return dims


def _candidate(recipe: MergeRecipe, dims: list[_Dim], x, n_layers: int) -> MergeRecipe:
    r = copy.deepcopy(recipe)
    for d, value in zip(dims, x, strict=True):
        params = r.models[d.model].parameters
        v = round(float(value), 4)
        if d.layer is None:
            params[d.key] = v
        else:
            if not isinstance(params.get(d.key), list):
                params[d.key] = [v] * n_layers
            params[d.key][d.layer] = v
    return recipe_from_dict(dump_to_dict(r))


def dump_to_dict(recipe: MergeRecipe) -> dict[str, Any]:
    from lmfuse.core.config import to_dict

    return {k: v for k, v in to_dict(recipe).items() if v is not None}


def _scorer(config: SearchConfig) -> tuple[list[tuple[str, str]], str, Callable[[str, str], bool]]:
    """``(prompt, answer)`` pairs, their description, and ``is_right(completion, answer)``."""
    if config.eval_file:

        def parse(obj: Any, line: int) -> tuple[str, str]:
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or "answer" not in obj:
                raise BadRecord(f'expected {{"prompt": str, "answer": ...}}, found {describe(obj)}')
            return obj["prompt"], str(obj["answer"])

        pairs = read_records(config.eval_file, parse, '{"prompt", "answer"} record')
        return (
            pairs,
            f"{len(pairs)} prompts of {config.eval_file}",
            lambda c, a: c.strip().startswith(a.strip()),
        )
    from lmfuse import zoo
    from lmfuse.zoo.questions import EVAL_PER_OP

    per_op = max(1, min(config.per_op, EVAL_PER_OP))
    questions = [q for q in zoo.eval_set() if int(q.id.split("-")[1]) >= EVAL_PER_OP - per_op]
    pairs = [(q.prompt, q.answer) for q in questions]
    desc = f"{len(pairs)} zoo held-out questions (the last {per_op} per operation)"
    return pairs, desc, lambda c, a: zoo.extract_number(c) == a


def search(recipe: MergeRecipe, config: SearchConfig | None = None, progress: bool = False) -> SearchResult:
    """CMA-ES over the recipe's weights (and densities); returns the best recipe found.

    Runs torch on one CPU thread meanwhile (restored after): the candidates are small models, where
    thread start-up costs more than it saves, and badly so on a busy machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _search(recipe, config or SearchConfig(), progress)
    finally:
        torch.set_num_threads(threads)


def _search(recipe: MergeRecipe, config: SearchConfig, progress: bool) -> SearchResult:
    import numpy as np

    try:
        from cmaes import CMA
    except ImportError:
        raise LmfuseError("merge search needs the cmaes package: pip install 'lmfuse[merge]'") from None
    from tqdm.auto import tqdm

    from lmfuse.core.loading import load_tokenizer
    from lmfuse.merge.inmemory import empty_model, load_merge
    from lmfuse.merge.plan import plan_merge
    from lmfuse.merge.write import check_device

    if recipe.models is None:
        raise ConfigError("merge search works on models: recipes (not slices:)")
    if config.budget < 2:
        raise ConfigError(f"budget: expected at least 2 merges, found {config.budget}")
    device = check_device(config.device)
    opened: dict = {}
    plan = plan_merge(recipe, opened=opened)
    n_layers = plan.num_layers
    dims = _dimensions(recipe, n_layers, config)
    pairs, desc, is_right = _scorer(config)
    tok = load_tokenizer(plan.sources[plan.tokenizer_model].directory)
    model = empty_model(plan.config, device)

    def score(candidate: MergeRecipe) -> float:
        load_merge(model, plan_merge(candidate, opened=opened), device)
        completions = _generate(model, tok, [p for p, _ in pairs], config.max_new_tokens)
        return sum(is_right(c, a) for c, (_, a) in zip(completions, pairs, strict=True)) / len(pairs)

    bar = tqdm(total=config.budget, desc="merge search", disable=not progress)
    start_score = score(recipe)
    bar.update(1)
    best = (start_score, recipe)
    history = [start_score]
    bounds = np.array([BOUNDS[d.key] for d in dims], dtype=float)
    opt = CMA(mean=np.array([d.start for d in dims]), sigma=config.sigma, bounds=bounds, seed=config.seed)
    while len(history) < config.budget:
        told = []
        for _ in range(opt.population_size):
            if len(history) >= config.budget:
                break
            x = opt.ask()
            candidate = _candidate(recipe, dims, x, n_layers)
            s = score(candidate)
            history.append(s)
            told.append((x, -s))
            if s > best[0]:
                best = (s, candidate)
            bar.update(1)
            bar.set_postfix(best=f"{best[0]:.3f}")
        if len(told) == opt.population_size:
            opt.tell(told)
    bar.close()
    return SearchResult(
        best[1], dump_yaml(dump_to_dict(best[1])), best[0], start_score, len(history), desc, history
    )


def _generate(model, tok, prompts: list[str], max_new_tokens: int) -> list[str]:
    from lmfuse.zoo.evaluate import hf_generate_fn

    generate = hf_generate_fn(model, tok, max_new_tokens=max_new_tokens)
    return [c for i in range(0, len(prompts), 64) for c in generate(prompts[i : i + 64])]
