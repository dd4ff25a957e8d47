"""Per-position log-probs of a causal LM's own distribution, for ``logprobs`` / ``echo`` replies.

One forward pass over ``prompt + generated`` tokens: position ``t``'s distribution is
``log_softmax(logits[t - 1])`` at temperature 1, whatever sampling settings produced the tokens.
"""

from __future__ import annotations

from typing import Any

from lmfuse.backends.base import TokenLogprobs


def token_logprobs(
    model: Any, tokenizer: Any, prompt_ids: list[int], new_ids: list[int], k: int, echo: bool
) -> TokenLogprobs:
    """Log-probs of ``new_ids`` (and of ``prompt_ids`` too with ``echo``) with the ``k`` best alternatives."""
    import torch

    ids = list(prompt_ids) + list(new_ids)
    kwargs: dict[str, Any] = {}
    if callable(getattr(model, "route", None)):  # routed once per prompt (PromptRoutedMoE): as generated
        kwargs["routing"] = model.route(torch.tensor([list(prompt_ids)], device=model.device))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=model.device), **kwargs).logits[0]  # (seq, vocab)
    logp = torch.log_softmax(logits.float(), dim=-1)
    first = 0 if echo else len(prompt_ids)
    out = TokenLogprobs([], [], [], [])
    k = min(k, logp.shape[-1])
    for t in range(first, len(ids)):
        out.token_ids.append(ids[t])
        out.tokens.append(tokenizer.decode([ids[t]]))
        if t == 0:
            out.token_logprobs.append(None)
            out.top.append(None)
            continue
        row = logp[t - 1]  # (vocab,) the distribution that predicts token t
        out.token_logprobs.append(float(row[ids[t]]))
        values, indices = torch.topk(row, k) if k else (row[:0], row[:0].long())
        top = [(int(i), tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)]
        if ids[t] not in {i for i, _, _ in top}:
            top.append((ids[t], out.tokens[-1], float(row[ids[t]])))
        out.top.append(top)
    return out
