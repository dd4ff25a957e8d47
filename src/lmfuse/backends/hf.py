"""``hf``: a local transformers causal LM (a zoo model by default), batched.

Requests submitted concurrently (by the agents of a round, by several questions, by several server
clients) are gathered into one left-padded ``generate`` call, run in a worker thread so the event loop
stays free. Chat requests use the tokenizer's chat template; a tokenizer without one (the zoo) gets the
messages' contents joined by newlines. Greedy when ``temperature == 0``. Only requests with the same
sampling settings share a batch (``batch_key``); each keeps its own ``max_tokens`` and ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from lmfuse.backends.base import Reply, Request
from lmfuse.backends.logprobs import token_logprobs

_SEED_LOCK = threading.Lock()
"""Seeded sampling sets torch's global generator: one seeded ``generate`` at a time in the process."""


def batch_key(request: Request) -> tuple:
    """Requests batched into one ``generate`` share this key: all greedy ones together, sampled ones
    by ``(temperature, top_p)``, and a seeded sampled request alone (its reply must not depend on
    what it was batched with)."""
    if request.temperature <= 0:
        return ("greedy",)
    if request.seed is not None:
        return ("seeded", id(request))
    return ("sample", request.temperature, request.top_p)


@contextlib.contextmanager
def _seeded(seed: int | None):
    if seed is None:
        yield
        return
    import torch

    with _SEED_LOCK, torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


class _QueueStreamer:
    """A transformers streamer handing each new token id to an asyncio queue (``None`` at the end)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self.loop, self.queue, self.prompt_seen = loop, queue, False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate passes the prompt first
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, int(token))

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


def _halting(halt: threading.Event | None) -> Any:
    if halt is None:
        return None
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Halt(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), halt.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Halt()])


def _covering(tok: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text has at least ``n_chars`` characters."""
    for n in range(len(ids) + 1):
        if len(tok.decode(ids[:n], skip_special_tokens=True)) >= n_chars:
            return ids[:n]
    return ids


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
            # plain checkpoints, and prompt-routed MoEs as the routed model (core refuses those)
            from lmfuse.moe.prompt import load_model_and_tokenizer

            model, tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device=device)
        self.model, self.tokenizer = model, tokenizer
        self.name = name
        self.max_batch = max_batch
        self._pending: list[tuple[Request, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batches = 0
        """``generate`` calls made so far (requests are batched, so usually fewer than requests)."""

    @property
    def context_length(self) -> int | None:
        """The model's ``max_position_embeddings`` (the server enforces it; in-process calls do not)."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def render(self, request: Request) -> str:
        """The text the model sees for ``request`` (token-id prompts: their decoded text)."""
        if request.prompt_ids is not None:
            return self.tokenizer.decode(request.prompt_ids)
        if request.prompt is not None:
            return request.prompt
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
        return "\n".join(m["content"] for m in request.messages or [])

    def encode(self, request: Request) -> list[int]:
        """The prompt's token ids: ``prompt_ids`` as given, else the rendered text tokenised (with BOS)."""
        if request.prompt_ids is not None:
            return list(request.prompt_ids)
        return list(self.tokenizer(self.render(request))["input_ids"])

    def generate_batch(
        self, requests: Sequence[Request], streamer: Any = None, halt: Any = None
    ) -> list[Reply]:
        """Blocking batched generation: one left-padded ``generate`` for all ``requests``, which must
        share their sampling settings (``temperature``, ``top_p``, ``seed``; see ``batch_key``).
        ``streamer``: a transformers streamer fed each new token; ``halt``: a ``threading.Event`` that
        stops generation early when set (a client that went away)."""
        import torch

        tok, start = self.tokenizer, time.perf_counter()
        self.batches += 1
        prompts = [self.encode(r) for r in requests]
        width = max(len(p) for p in prompts)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=ids.device)
        max_new = max(r.max_tokens for r in requests)
        first = requests[0]
        kwargs: dict[str, Any] = {"do_sample": first.temperature > 0}
        if first.temperature > 0:
            kwargs.update(temperature=first.temperature, top_p=first.top_p, top_k=0)
        with torch.no_grad(), _seeded(first.seed if first.temperature > 0 else None):
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new, pad_token_id=pad,
                eos_token_id=tok.eos_token_id, streamer=streamer, stopping_criteria=_halting(halt), **kwargs,
            )  # fmt: skip
        new = out[:, width:]  # (batch, new_tokens)
        seconds = time.perf_counter() - start
        return [
            self._reply(req, p, new[i].tolist(), seconds)
            for i, (req, p) in enumerate(zip(requests, prompts, strict=True))
        ]

    def _reply(self, req: Request, prompt: list[int], new: list[int], seconds: float) -> Reply:
        """One request's reply from its generated ids (cut at its own ``max_tokens``, EOS, stop strings)."""
        tok = self.tokenizer
        cap = req.max_tokens
        ids = new[:cap]
        # usage counts the EOS the model generated (as vLLM does); the text stops before it
        stopped = tok.eos_token_id in ids
        generated = ids.index(tok.eos_token_id) + 1 if stopped else len(ids)
        ids = ids[: generated - 1] if stopped else ids
        text = tok.decode(ids, skip_special_tokens=True)
        on_eos = stopped
        for s in req.stop or []:
            if s in text:
                stopped, text = True, text.split(s, 1)[0]
        if req.stop and len(text) < len(tok.decode(ids, skip_special_tokens=True)):
            ids, on_eos = _covering(tok, ids, len(text)), False
        finish = "stop" if stopped or generated < cap else "length"
        reply = Reply(text, prompt_tokens=len(prompt), completion_tokens=generated, seconds=seconds,
                      finish_reason=finish)  # fmt: skip
        if req.echo:  # the prompt as the client sent it (token ids: their text without special tokens)
            given = req.prompt if req.prompt is not None else None
            reply.prompt_text = given or tok.decode(prompt, skip_special_tokens=req.messages is None)
        if req.logprobs is not None:  # a generated EOS is the last entry (as vLLM reports it)
            scored = ids + [tok.eos_token_id] if on_eos else ids
            reply.logprobs = token_logprobs(self.model, tok, prompt, scored, req.logprobs, req.echo)
        return reply

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

    async def stream(self, request: Request) -> AsyncIterator[str | Reply]:
        """Text deltas of ``request``'s reply as tokens are generated, then its ``Reply`` (whose text is
        the deltas joined). Runs outside the batch queue; stops generating when the consumer leaves."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        halt = threading.Event()
        streamer = _QueueStreamer(loop, queue)
        job = asyncio.ensure_future(asyncio.to_thread(self.generate_batch, [request], streamer, halt))
        job.add_done_callback(lambda _: queue.put_nowait(None))  # also ends the loop if generate raised
        ids: list[int] = []
        sent, hold = "", max((len(s) for s in request.stop or []), default=1) - 1
        try:
            while (token := await queue.get()) is not None:
                if token == self.tokenizer.eos_token_id:
                    continue
                ids.append(token)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if any(s in text for s in request.stop or []):
                    halt.set()  # the reply ends at the stop string: generate no further
                    continue
                safe = text[: len(text) - hold].rstrip("\ufffd")  # a stop may be starting; bytes pending
                if len(safe) > len(sent) and safe.startswith(sent):
                    yield safe[len(sent) :]
                    sent = safe
            try:
                reply = (await job)[0]
            except Exception as exc:
                yield Reply(error=f"{type(exc).__name__}: {exc}")
                return
            if reply.text.startswith(sent) and len(reply.text) > len(sent):
                yield reply.text[len(sent) :]
            yield reply
        finally:
            halt.set()
            if not job.done():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(job)

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let concurrent callers enqueue before the batch is cut
            key = batch_key(self._pending[0][0])
            batch, rest = [], []
            for item in self._pending:
                (batch if len(batch) < self.max_batch and batch_key(item[0]) == key else rest).append(item)
            self._pending = rest
            live = [(r, f) for r, f in batch if not f.done()]  # a cancelled caller's request is dropped
            if not live:
                continue
            try:
                replies = await asyncio.to_thread(self.generate_batch, [r for r, _ in live])
            except Exception as exc:  # a failed batch fails its calls, not the caller's loop
                replies = [Reply(error=f"{type(exc).__name__}: {exc}") for _ in live]
            for (_, fut), reply in zip(live, replies, strict=True):
                if not fut.done():
                    fut.set_result(reply)

    async def aclose(self) -> None:
        return None
