"""Prompt-level routing: one routing decision per sequence, made from the prompt, kept for every token.

Token-level routing (transformers' Mixtral / Qwen-MoE gates) decides per token, so positions before the
text that says what a prompt needs already mix experts. Here a *prompt router* decides once per
sequence from features of the prompt, and every MoE layer uses that decision for the prompt and for
all generated tokens:

- features ``(B, 2M)``: the mean over the prompt's real tokens and the last real token of the first
  layer's MLP input (embeddings → norm → attention → norm). They depend on shared weights only, so the
  decision is made before any expert runs and needs no routing of its own;
- router: ``probs = softmax(features @ W.T)`` with ``W`` ``(E, 2M)``, top-k, renormalised to sum 1
  (a prompt routed with weight 1 to expert X runs exactly X's MLP in every layer);
- applied through forward hooks on each MoE block's gate, so ``generate`` with or without a cache, and
  transformers' own experts kernels, work unchanged.

On disk a prompt-routed model is an ordinary transformers MoE checkpoint (which transformers alone loads
with its token-level gates) plus ``prompt_router.safetensors`` and ``prompt_router.json``;
``PromptRoutedMoE.from_pretrained`` / ``load_model_and_tokenizer`` read both.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lmfuse.moe.hf import moe_blocks

ROUTER_WEIGHTS = "prompt_router.safetensors"
ROUTER_CONFIG = "prompt_router.json"
FEATURES = "layer0_mlp_input_mean_last"
"""The feature recipe, recorded in ``prompt_router.json`` (a checkpoint with another one is refused)."""


@dataclass
class PromptRouting:
    """One decision per sequence: ``indices`` / ``weights`` ``(B, k)``, ``probs`` ``(B, E)``."""

    indices: torch.Tensor
    weights: torch.Tensor
    probs: torch.Tensor

    @classmethod
    def one_hot(cls, expert: int | list[int], num_experts: int) -> PromptRouting:
        """Every sequence (or sequence ``b``: ``expert[b]``) routed with weight 1 to one expert."""
        idx = torch.tensor([expert] if isinstance(expert, int) else expert).view(-1, 1)
        probs = torch.nn.functional.one_hot(idx[:, 0], num_experts).float()
        return cls(idx, torch.ones(idx.shape), probs)

    def expand(self, batch: int) -> PromptRouting:
        """Rows repeated for a batch ``r`` times larger (``num_return_sequences``, beams: repeat_interleave)."""
        rows = self.indices.shape[0]
        if rows == batch:
            return self
        if batch % rows:
            raise ValueError(f"prompt routing for {rows} sequences cannot route a batch of {batch}")
        r = batch // rows
        return PromptRouting(*(t.repeat_interleave(r, 0) for t in (self.indices, self.weights, self.probs)))


class _Captured(Exception):
    pass


@torch.no_grad()
def prompt_features(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, 2M)`` fp32 features of ``(B, T)`` prompts (left or right padded: positions follow the mask)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    seen: dict[str, torch.Tensor] = {}

    def grab(_module, args):
        seen["h"] = args[0].float()  # (B, T, M)
        raise _Captured

    layers = model.model.layers
    handle = layers[0].mlp.register_forward_pre_hook(grab)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    try:
        model.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
    except _Captured:
        pass
    finally:
        handle.remove()
    h, mask = seen["h"], attention_mask.to(seen["h"].dtype)
    mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, M)
    last = (attention_mask.long() * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)
    return torch.cat([mean, h[torch.arange(h.shape[0]), last]], dim=-1)


def route(features: torch.Tensor, weight: torch.Tensor, k: int) -> PromptRouting:
    """``features`` ``(B, F)``, ``weight`` ``(E, F)`` → top-``k`` of the softmax, renormalised."""
    probs = torch.softmax(features.float() @ weight.float().T, dim=-1)  # (B, E)
    top, idx = torch.topk(probs, k, dim=-1)
    return PromptRouting(idx, top / top.sum(-1, keepdim=True), probs)


@contextlib.contextmanager
def fixed_routing(model, routing: PromptRouting) -> Iterator[None]:
    """Within the block, every MoE gate of ``model`` routes row ``b`` of any batch as ``routing[b]``."""
    with _routing_hooks(model, lambda: routing):
        yield


@contextlib.contextmanager
def _routing_hooks(model, current) -> Iterator[None]:
    """Gate hooks that replace each gate's decision by ``current()``'s, row by row."""
    shape: dict[str, tuple[int, int]] = {}

    def see_batch(_module, args):
        shape["bt"] = tuple(args[0].shape[:2])  # (B, T) of the block's (B, T, M) input

    def replace(_module, _args, output):
        logits, scores, _ = output  # the gate's own (N, E), (N, k), (N, k); N = B·T
        batch, t = shape["bt"]
        r = current().expand(batch)
        rep = lambda x: x.to(logits.device).repeat_interleave(t, 0)  # noqa: E731  (B, ·) → (B·T, ·)
        probs = rep(r.probs).clamp_min(1e-9)
        return probs.log().to(logits.dtype), rep(r.weights).to(scores.dtype), rep(r.indices)

    handles = []
    try:
        for block in moe_blocks(model):
            handles.append(block.register_forward_pre_hook(see_batch))
            handles.append(block.gate.register_forward_hook(replace))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def routed_by_prompt(prm: PromptRoutedMoE) -> Iterator[None]:
    """Within the block, every ``prm.model(input_ids=..., attention_mask=..., labels=...)`` call (as
    transformers' ``Trainer`` makes) routes each row by ``prm``'s router from its prompt: the leading real
    tokens whose labels are -100 (a prompt + completion batch, right padded)."""
    state: dict[str, PromptRouting] = {}

    def decide(_module, _args, kwargs):
        ids, mask, labels = (kwargs.get(k) for k in ("input_ids", "attention_mask", "labels"))
        if ids is None or labels is None:
            raise ValueError("training with prompt routing needs input_ids and labels that mask the prompt")
        mask = torch.ones_like(ids) if mask is None else mask
        prompt = mask.bool() & (
            (labels != -100).long().cumsum(-1) == 0
        )  # (B, T) before the first learned token
        state["routing"] = prm.route(ids, prompt.long())

    handle = prm.model.register_forward_pre_hook(decide, with_kwargs=True)
    try:
        with _routing_hooks(prm.model, lambda: state["routing"]):
            yield
    finally:
        handle.remove()


class PromptRoutedMoE:
    """A transformers MoE whose routing is decided once per sequence by a prompt router.

    ``generate`` and ``__call__`` take the usual transformers arguments; the routing comes from
    ``input_ids`` (the prompt) unless a ``PromptRouting`` is passed (e.g. to score a completion with the
    routing of its prompt)."""

    def __init__(self, model, weight: torch.Tensor, num_experts_per_tok: int) -> None:
        num_experts = _num_experts(model)
        if weight.shape != (num_experts, 2 * model.config.hidden_size):
            raise ValueError(
                f"prompt router weight: expected shape {(num_experts, 2 * model.config.hidden_size)}, "
                f"found {tuple(weight.shape)}"
            )
        if not 1 <= num_experts_per_tok <= num_experts:
            raise ValueError(f"num_experts_per_tok: expected 1..{num_experts}, found {num_experts_per_tok}")
        self.model = model
        self.weight = weight.detach().float().clone()
        self.num_experts_per_tok = num_experts_per_tok

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PromptRouting:
        features = prompt_features(self.model, input_ids, attention_mask)
        return route(features, self.weight.to(features.device), self.num_experts_per_tok)

    def __call__(self, input_ids, attention_mask=None, routing: PromptRouting | None = None, **kwargs):
        routing = routing if routing is not None else self.route(input_ids, attention_mask)
        with fixed_routing(self.model, routing):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def generate(self, input_ids, attention_mask=None, routing: PromptRouting | None = None, **kwargs):
        routing = routing if routing is not None else self.route(input_ids, attention_mask)
        with fixed_routing(self.model, routing):
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def eval(self) -> PromptRoutedMoE:
        self.model.eval()
        return self

    def to(self, *args, **kwargs) -> PromptRoutedMoE:
        self.model.to(*args, **kwargs)  # the router stays fp32 (moved to the model's device when used)
        return self

    @staticmethod
    def files_for(weight: torch.Tensor, num_experts_per_tok: int) -> dict[str, bytes | str]:
        """The two files beside the checkpoint: name → content."""
        from safetensors.torch import save

        meta = {"routing": "prompt", "features": FEATURES, "num_experts_per_tok": num_experts_per_tok}
        return {
            ROUTER_WEIGHTS: save({"weight": weight.detach().float().cpu().contiguous()}),
            ROUTER_CONFIG: json.dumps(meta, indent=2) + "\n",
        }

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        for name, content in self.files_for(self.weight, self.num_experts_per_tok).items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(directory / name, mode) as fh:
                fh.write(content)

    @classmethod
    def from_pretrained(cls, name_or_path, dtype="auto", device="cpu") -> PromptRoutedMoE:
        from lmfuse.core.loading import load_model, resolve_model_path

        directory = Path(resolve_model_path(name_or_path))
        weight, k = read_router(directory)
        return cls(load_model(directory, dtype=dtype, device=device, plain=True), weight, k)


def _num_experts(model) -> int:
    cfg = model.config
    return getattr(cfg, "num_local_experts", None) or cfg.num_experts


def is_prompt_routed(name_or_path) -> bool:
    from lmfuse.core.loading import resolve_model_path
    from lmfuse.errors import LmfuseError

    try:
        return (Path(resolve_model_path(name_or_path)) / ROUTER_CONFIG).is_file()
    except LmfuseError:  # an unknown name is not prompt-routed; loading it reports the problem
        return False


def read_router(directory: Path) -> tuple[torch.Tensor, int]:
    """``(weight (E, 2M), num_experts_per_tok)`` from a prompt-routed checkpoint."""
    from safetensors.torch import load_file

    from lmfuse.errors import CheckpointError

    try:
        meta = json.loads((directory / ROUTER_CONFIG).read_text())
        weight = load_file(directory / ROUTER_WEIGHTS)["weight"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{directory}: unreadable prompt router ({ROUTER_CONFIG} + {ROUTER_WEIGHTS}): {exc}"
        ) from None
    if not isinstance(meta, dict) or meta.get("features") != FEATURES:
        raise CheckpointError(
            f"{directory}/{ROUTER_CONFIG}: expected features {FEATURES!r}, found {meta.get('features') if isinstance(meta, dict) else meta!r}"
        )
    return weight, int(meta.get("num_experts_per_tok", 1))


def load_model_and_tokenizer(name_or_path, dtype="auto", device="cpu"):
    """``(model, tokenizer)``: a ``PromptRoutedMoE`` for a prompt-routed checkpoint, else the plain model."""
    from lmfuse.core import loading

    if is_prompt_routed(name_or_path):
        return PromptRoutedMoE.from_pretrained(name_or_path, dtype, device), loading.load_tokenizer(
            name_or_path
        )
    return loading.load_model_and_tokenizer(name_or_path, dtype=dtype, device=device)
