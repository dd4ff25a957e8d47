"""Demo rows for crowd voting on the zoo: majority over members, and over sampled answers.

Rows (each scored like the members, on the same held-out questions):

1. ``vote: answer, N greedy`` — majority over the N members' greedy answers.
2. ``vote: answer, NxK sampled`` — every member samples K answers (temperature ``TEMPERATURE``),
   the extracted numbers vote (self-consistency across models).
3. ``vote: char_rouge_l, NxK sampled`` — the same samples, the most central text by character
   ROUGE-L (the WSDM Cup recipe).

torch is imported inside the sampling function only (the vote package itself never imports it).
"""

from __future__ import annotations

import time
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

    Seeds torch's global generator with ``seed`` first so the demo is reproducible.
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


def demo_rows(ctx) -> list:
    """Voting rows for ``lmfuse demo`` (``ctx``: ``lmfuse.demo.DemoContext``)."""
    from lmfuse import zoo
    from lmfuse.demo import DemoRow

    names = list(ctx.results)
    prompts = [q.prompt for q in ctx.questions]
    rows = []
    start = time.perf_counter()
    greedy = [list(c) for c in zip(*(ctx.results[n].completions for n in names), strict=True)]
    picked, ties = voted_completions(greedy, "answer")
    result = zoo.score(ctx.questions, picked)
    rows.append(DemoRow(f"vote: answer, {len(names)} greedy", result.row(),
                        time.perf_counter() - start, note=f"majority of extracted numbers; {ties} ties"))  # fmt: skip

    start = time.perf_counter()
    samples: list[list[str]] = [[] for _ in prompts]
    for name in names:
        model, tok = ctx.member(name)
        for i, group in enumerate(sample_completions(model, tok, prompts, SAMPLES, TEMPERATURE)):
            samples[i].extend(group)
    sampling_s = time.perf_counter() - start
    label = f"{len(names)}x{SAMPLES} sampled"
    for similarity in ("answer", "char_rouge_l"):
        t0 = time.perf_counter()
        picked, ties = voted_completions(samples, similarity)
        result = zoo.score(ctx.questions, picked)
        note = f"T={TEMPERATURE}; sampling {sampling_s:.1f}s shared; {ties} ties"
        rows.append(DemoRow(f"vote: {similarity}, {label}", result.row(), sampling_s + time.perf_counter() - t0,
                            note=note))  # fmt: skip
    return rows
