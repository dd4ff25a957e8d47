"""``Outcome`` → OpenAI response bodies (completions and chat), logprobs in both shapes, and errors."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from lmfuse.backends.base import TokenLogprobs
from lmfuse.serve.fusion import Choice, Outcome

_ID_BASE = int.from_bytes(os.urandom(12), "big")
_ID_COUNT = itertools.count()


def new_id(prefix: str) -> str:
    """A response id unique within this server's life and across servers (a random 96-bit start,
    counted up): ``chatcmpl-`` + 24 hex digits. Ids identify, they guard nothing."""
    return f"{prefix}-{(_ID_BASE + next(_ID_COUNT)) & (1 << 96) - 1:024x}"


def error_body(message: str, kind: str, status: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def usage(outcomes: list[Outcome]) -> dict[str, int]:
    p = sum(o.prompt_tokens for o in outcomes)
    c = sum(o.completion_tokens for o in outcomes)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def lmfuse_field(outcomes: list[Outcome]) -> dict[str, Any]:
    """The documented ``lmfuse`` field: one prompt's details as is, a batch's as a list."""
    return outcomes[0].details if len(outcomes) == 1 else {"prompts": [o.details for o in outcomes]}


def envelope(kind: str, model: str, choices: list[dict], outcomes: list[Outcome], rid: str) -> dict[str, Any]:
    return {
        "id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices,
        "usage": usage(outcomes), "lmfuse": lmfuse_field(outcomes),
    }  # fmt: skip


def _name(lp: TokenLogprobs, t: int, as_ids: bool) -> str:
    return f"token_id:{lp.token_ids[t]}" if as_ids else lp.tokens[t]


def completion_logprobs(lp: TokenLogprobs, as_ids: bool, offset: int = 0) -> dict[str, Any]:
    """vLLM's completions shape: ``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``."""
    tops: list[dict[str, float] | None] = []
    offsets, at = [], offset
    for t, top in enumerate(lp.top):
        tops.append(None if top is None else {(f"token_id:{i}" if as_ids else s): v for i, s, v in top})
        offsets.append(at)
        at += len(lp.tokens[t])
    return {"tokens": [_name(lp, t, as_ids) for t in range(len(lp.tokens))],
            "token_logprobs": lp.token_logprobs, "top_logprobs": tops, "text_offset": offsets}  # fmt: skip


def completion_choice(choice: Choice, index: int, as_ids: bool) -> dict[str, Any]:
    text = (choice.prompt_text or "") + choice.text
    lp = None if choice.logprobs is None else completion_logprobs(choice.logprobs, as_ids)
    return {"index": index, "text": text, "logprobs": lp, "finish_reason": choice.finish_reason}


def chat_logprobs(lp: TokenLogprobs, k: int) -> dict[str, Any]:
    """OpenAI's chat shape: ``content`` = one entry per token with its ``k`` best alternatives."""
    content = []
    for t, tok in enumerate(lp.tokens):
        alts = [{"token": s, "logprob": v, "bytes": list(s.encode())} for _, s, v in (lp.top[t] or [])[:k]]
        content.append({"token": tok, "logprob": lp.token_logprobs[t], "bytes": list(tok.encode()),
                        "top_logprobs": alts})  # fmt: skip
    return {"content": content, "refusal": None}


def chat_choice(choice: Choice, index: int, k: int | None) -> dict[str, Any]:
    lp = None if choice.logprobs is None or k is None else chat_logprobs(choice.logprobs, k)
    message = {"role": "assistant", "content": choice.text}
    return {"index": index, "message": message, "logprobs": lp, "finish_reason": choice.finish_reason}


def int_time() -> int:
    return int(time.time())


def completion_delta(d: Any, as_ids: bool) -> dict[str, Any]:
    lp = None if d.logprobs is None else completion_logprobs(d.logprobs, as_ids)
    return {"text": d.text, "logprobs": lp, "finish_reason": d.finish_reason}


def chat_delta(d: Any, k: int | None) -> dict[str, Any]:
    lp = None if d.logprobs is None or k is None else chat_logprobs(d.logprobs, k)
    delta = {"content": d.text} if d.text or d.finish_reason is None else {}
    return {"delta": delta, "logprobs": lp, "finish_reason": d.finish_reason}
