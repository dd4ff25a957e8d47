"""Input size limits: every text must fit the model's context, checked before any work (issue 15, 14).

A model's context length comes from its config (``max_position_embeddings`` and kin). ``check_fits``
counts each text's tokens (plus the tokens to be generated) and raises one ``InputDataError`` naming
every text that does not fit. A text far longer than any tokenization of it could fit (more than
``CHARS_PER_TOKEN`` characters per token of context) is refused without tokenizing it, so a 50 MB line
costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmfuse.errors import InputDataError

CHARS_PER_TOKEN = 64
"""No tokenizer packs more characters than this into one token on average; beyond it, refuse unread."""
MAX_SHOWN = 20


def context_length(config: Any) -> int | None:
    """The longest sequence a model config accepts, or ``None`` if it does not say."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def input_limit(config: Any, max_tokens: int | None = None) -> int | None:
    """The model's context, or the user's ``max_tokens`` if smaller."""
    ctx = context_length(config)
    if max_tokens is None:
        return ctx
    return max_tokens if ctx is None else min(ctx, max_tokens)


def check_fits(
    texts: Sequence[str],
    tokenizer: Any,
    limit: int | None,
    where: Callable[[int], str],
    reserve: int = 0,
    what: str = "text",
) -> None:
    """Raise ``InputDataError`` listing every text whose tokens + ``reserve`` exceed ``limit``."""
    if limit is None:
        return
    problems = []
    for i, text in enumerate(texts):
        if len(text) > CHARS_PER_TOKEN * limit:
            problems.append(f"{where(i)}: {what} of {len(text):,} characters, far over the limit")
            continue
        n = len(tokenizer(text)["input_ids"])
        if n + reserve > limit:
            extra = f" + {reserve} to generate" if reserve else ""
            problems.append(f"{where(i)}: {what} of {n:,} tokens{extra}, over the limit")
    why = f"limit {limit:,} tokens: the model's context length or --max-input-tokens"
    if len(problems) == 1:
        raise InputDataError(f"{problems[0]} ({why}); too long for the model: shorten or drop it")
    if problems:
        more = f"\n... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise InputDataError(
            f"{len(problems)} {what}s too long for the model ({why}); shorten or drop them:\n"
            + "\n".join(problems[:MAX_SHOWN])
            + more
        )
