"""Demo rows for crowd voting on the zoo: majority over members, and over sampled answers.

Rows (each scored like the members, on the same held-out questions):

1. ``vote: answer, N greedy`` — majority over the N members' greedy answers.
2. ``vote: answer, NxK sampled`` — every member samples K answers (temperature ``TEMPERATURE``),
   the extracted numbers vote (self-consistency across models).
3. ``vote: char_rouge_l, NxK sampled`` — the same samples, the most central text by character
   ROUGE-L (the WSDM Cup recipe).
4. baseline ``best member sampled NxK times`` — self-consistency of the best member alone at the same
   number of calls: what the crowd must beat to be worth its calls.

Sample ``j`` of a member is one seeded pass over all questions (``member_samples``), cached in the demo
context, so every row that uses it (here and in ``lmfuse.exchange.demo``) sees the same answers whatever
ran before.

torch is imported inside the sampling function only (the vote package itself never imports it).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

from lmfuse.vote.crowd import vote_batch
from lmfuse.vote.similarity import AnswerMatch
from lmfuse.zoo.evaluate import MAX_NEW_TOKENS

SAMPLES = 4
TEMPERATURE = 0.8
SEED = 1234
ZOO_ANSWER_KIND = "number"
"""The EoT rule (after "the answer is", else the last number): what ``lmfuse.zoo.extract_number`` reads."""


def sample_completions(
    model,
    tokenizer,
    prompts: Sequence[str],
    n: int,
    temperature: float,
    max_new_tokens: int = MAX_NEW_TOKENS,
    seed: int = SEED,
) -> list[list[str]]:
    """``n`` sampled completions per prompt (prompt removed): ``len(prompts)`` lists of ``n`` strings.

    ``max_new_tokens`` defaults to the zoo's answer budget. Seeds torch's global generator with ``seed``
    first so the demo is reproducible.
    """
    import torch

    torch.manual_seed(seed)
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            num_return_sequences=n,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # (len(prompts) * n, prompt_len + new): the n samples of prompt i are rows i*n .. i*n+n-1
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def voted_completions(candidate_sets: Sequence[Sequence[str]], similarity: str) -> tuple[list[str], int]:
    """Per question, what the vote picked (the voted number for ``answer``); and the count of ties.

    ``answer`` reads each completion's number exactly as the zoo's scorer does (the EoT rule).
    """
    sim = AnswerMatch(kind=ZOO_ANSWER_KIND) if similarity == "answer" else similarity
    results = vote_batch(candidate_sets, sim)
    picked = []
    for r in results:
        if r.index is None:
            picked.append("")
        elif r.answers is not None:
            picked.append(r.answers[r.index])
        else:
            picked.append(r.text)
    return picked, sum(r.tie for r in results)


def member_samples(ctx, name: str, k: int) -> list[list[str]]:
    """Samples ``0..k-1`` of member ``name`` at ``TEMPERATURE``: ``len(questions)`` lists of ``k`` strings.

    Sample ``j`` is seeded by ``(name, j)`` alone and cached in ``ctx.cache``, so it is the same whoever
    asks first and however many samples they ask for.
    """
    cache = ctx.cache.setdefault("vote.samples", {})
    prompts = [q.prompt for q in ctx.questions]
    for j in range(k):
        if (name, j) not in cache:
            seed = SEED + zlib.crc32(f"{name}/{j}".encode())
            model, tok = ctx.member(name)
            got = sample_completions(model, tok, prompts, 1, TEMPERATURE, seed=seed)
            cache[name, j] = [g[0] for g in got]
    return [[cache[name, j][i] for j in range(k)] for i in range(len(prompts))]


def sampled_majority(ctx, calls: dict[str, int]) -> tuple[list[str], int]:
    """Majority of extracted numbers over ``calls[name]`` samples of each member (in that order)."""
    sets: list[list[str]] = [[] for _ in ctx.questions]
    for name, k in calls.items():
        for i, group in enumerate(member_samples(ctx, name, k)):
            sets[i].extend(group)
    return voted_completions(sets, "answer")


def demo_rows(ctx) -> list:
    """Voting rows for ``lmfuse demo`` (``ctx``: ``lmfuse.demo.DemoContext``)."""
    from lmfuse import zoo
    from lmfuse.demo import DemoRow, against_best

    names = tuple(ctx.results)
    rows = []
    start = time.perf_counter()
    greedy = [list(c) for c in zip(*(ctx.results[n].completions for n in names), strict=True)]
    picked, ties = voted_completions(greedy, "answer")
    result = zoo.score(ctx.questions, picked)
    rows.append(DemoRow(f"vote: answer, {len(names)} greedy", result.row(), time.perf_counter() - start,
                        note=f"{len(names)} calls; {ties} ties", fuses=names,
                        below=against_best(ctx, names, result.predictions)))  # fmt: skip

    start = time.perf_counter()
    samples: list[list[str]] = [[] for _ in ctx.questions]
    for name in names:
        for i, group in enumerate(member_samples(ctx, name, SAMPLES)):
            samples[i].extend(group)
    sampling_s = time.perf_counter() - start
    calls = len(names) * SAMPLES
    label = f"{len(names)}x{SAMPLES} sampled"
    for similarity in ("answer", "char_rouge_l"):
        t0 = time.perf_counter()
        picked, ties = voted_completions(samples, similarity)
        result = zoo.score(ctx.questions, picked)
        note = f"T={TEMPERATURE}, {calls} calls; {ties} ties"
        rows.append(DemoRow(f"vote: {similarity}, {label}", result.row(), sampling_s + time.perf_counter() - t0,
                            note=note, fuses=names, below=against_best(ctx, names, result.predictions)))  # fmt: skip

    best = ctx.best_member(names)
    start = time.perf_counter()
    picked, ties = sampled_majority(ctx, {best: calls})
    result = zoo.score(ctx.questions, picked)
    note = f"same budget as the {label} vote: {calls} calls, T={TEMPERATURE}; {ties} ties"
    rows.append(DemoRow(f"{best} sampled {calls}x, majority", result.row(), time.perf_counter() - start,
                        kind="baseline", note=note))  # fmt: skip
    return rows
