"""``hf``: a local transformers causal LM (a zoo model by default), batched.

Requests submitted concurrently (by the agents of a round, by several questions, by several server
clients) are gathered into one left-padded ``generate`` call, run in a worker thread so the event loop
stays free. Chat requests use the tokenizer's chat template; a tokenizer without one (the zoo) gets the
messages' contents joined by newlines. Greedy when ``temperature == 0``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from lmfuse.backends.base import Reply, Request


class HFBackend:
    """Generate with ``model``/``tokenizer`` (already loaded) or load ``model_path`` (``zoo:NAME``, dir)."""

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        model_path: str = "zoo:base",
        name: str = "hf",
        max_batch: int = 64,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> None:
        if model is None or tokenizer is None:
            from lmfuse.core.loading import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device=device)
        self.model, self.tokenizer = model, tokenizer
        self.name = name
        self.max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batches = 0
        """``generate`` calls made so far (requests are batched, so usually fewer than requests)."""

    def render(self, request: Request) -> str:
        """The text the model sees for ``request``."""
        if request.prompt is not None:
            return request.prompt
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
        return "\n".join(m["content"] for m in request.messages or [])

    def generate_batch(self, requests: Sequence[Request]) -> list[Reply]:
        """Blocking batched generation: one left-padded ``generate`` for all ``requests``."""
        import torch

        tok, start = self.tokenizer, time.perf_counter()
        self.batches += 1
        enc = tok([self.render(r) for r in requests], return_tensors="pt", padding=True, padding_side="left")
        enc = enc.to(self.model.device)
        sample = any(r.temperature > 0 for r in requests)
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs["temperature"] = max(r.temperature for r in requests)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=max(r.max_tokens for r in requests),
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                eos_token_id=tok.eos_token_id,
                **kwargs,
            )
        new = out[:, enc["input_ids"].shape[1] :]  # (batch, new_tokens)
        seconds = time.perf_counter() - start
        replies = []
        for i, req in enumerate(requests):
            ids = new[i, : req.max_tokens].tolist()
            # usage counts the EOS the model generated (as vLLM does); the text stops before it
            stopped = tok.eos_token_id in ids
            generated = ids.index(tok.eos_token_id) + 1 if stopped else len(ids)
            ids = ids[: generated - 1] if stopped else ids
            text = tok.decode(ids, skip_special_tokens=True)
            for s in req.stop or []:
                stopped = stopped or s in text
                text = text.split(s, 1)[0]
            prompt_len = int(enc["attention_mask"][i].sum())
            finish = "stop" if stopped or generated < req.max_tokens else "length"
            replies.append(
                Reply(
                    text,
                    prompt_tokens=prompt_len,
                    completion_tokens=generated,
                    seconds=seconds,
                    finish_reason=finish,
                )
            )
        return replies

    async def generate(self, requests: Sequence[Request]) -> list[Reply]:
        loop = asyncio.get_running_loop()
        futures = []
        for req in requests:
            fut = loop.create_future()
            self._pending.append((req, fut))
            futures.append(fut)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return list(await asyncio.gather(*futures))

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let concurrent callers enqueue before the batch is cut
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                replies = await asyncio.to_thread(self.generate_batch, [r for r, _ in batch])
            except Exception as exc:  # a failed batch fails its calls, not the caller's loop
                replies = [Reply(error=f"{type(exc).__name__}: {exc}") for _ in batch]
            for (_, fut), reply in zip(batch, replies, strict=True):
                if not fut.done():
                    fut.set_result(reply)

    async def aclose(self) -> None:
        return None
