"""``moe_train``: fine-tune an MoE's experts and routers together after ``moe build`` (Branch-Train-MiX).

Branch-Train-MiX builds an MoE from separately trained experts and then fine-tunes the whole mixture, so
that the routers learn which expert to use and the experts learn to work under mixed routing. This is
``lmfuse train`` (transformers' ``Trainer``: checkpoints, resume, accelerate / FSDP / DeepSpeed launchers,
``graft/train.py``) on an MoE model, with three additions:

- transformers' load-balancing loss (``load_balancing_loss_func``: k at perfect balance) is added to the
  next-token loss with weight ``router_aux_loss_coef`` (``output_router_logits`` on);
- parts can be frozen: ``attention`` (attention and norms), ``embeddings`` (input and output), ``experts``,
  ``routers``; frozen parameters are left out of the optimiser and come out bit-identical;
- a prompt-routed model (``lmfuse.moe.prompt``) trains under its prompt routing: each example is routed
  by the prompt router from its prompt (prompt + completion records are then required), so every expert
  learns on the examples it will receive; the prompt router itself is kept as it is (its files are
  carried over: retrain it with ``train-router`` if the experts or the first layer changed much).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmfuse.errors import ConfigError
from lmfuse.graft.train import TrainConfig, TrainResult, train

PARTS = ("attention", "embeddings", "experts", "routers")


@dataclass
class MoETrainConfig(TrainConfig):
    """``lmfuse train``'s settings plus the MoE's."""

    router_aux_loss_coef: float = 0.01
    """Weight of transformers' load-balancing loss (k at perfect balance); 0 turns it off."""
    freeze: list[str] = field(default_factory=list)
    """Parts left as built: any of ``attention`` (with the norms), ``embeddings``, ``experts``, ``routers``."""

    def validate(self) -> list[str]:
        problems = super().validate()
        unknown = [p for p in self.freeze if p not in PARTS]
        if unknown:
            problems.append(
                f"freeze: unknown part(s) {', '.join(map(repr, unknown))}; expected {', '.join(PARTS)}"
            )
        elif set(self.freeze) == set(PARTS):
            problems.append("freeze: every part is frozen, nothing would train")
        if self.router_aux_loss_coef < 0:
            problems.append(f"router_aux_loss_coef: expected >= 0, found {self.router_aux_loss_coef}")
        return problems


def parts(model) -> dict[str, str]:
    """Parameter name → its part, one of ``PARTS`` (found by module, not by name)."""
    from lmfuse.moe.hf import moe_blocks

    owner: dict[int, str] = {}
    for block in moe_blocks(model):
        owner.update({id(p): "routers" for p in block.gate.parameters()})
        owner.update({id(p): "experts" for p in block.experts.parameters()})
        for child_name, child in block.named_children():  # Qwen2-MoE's shared expert and its gate
            if child_name.startswith("shared_expert"):
                owner.update({id(p): "experts" for p in child.parameters()})
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        owner.update({id(p): "embeddings" for p in module.parameters()})
    return {name: owner.get(id(p), "attention") for name, p in model.named_parameters()}


def freeze_parts(model, frozen_parts: list[str]) -> tuple[int, int]:
    """Set ``requires_grad`` by part; returns ``(trained, frozen)`` parameter counts."""
    part = parts(model)
    counts = {True: 0, False: 0}
    for name, p in model.named_parameters():
        frozen = part[name] in frozen_parts
        p.requires_grad_(not frozen)
        counts[frozen] += p.numel()
    return counts[False], counts[True]


def moe_train(
    model: Any,
    data: list[str | Path],
    out: str | Path,
    config: MoETrainConfig,
    tokenizer: Any = None,
    overwrite: bool = False,
    progress: bool = False,
    resume: bool = False,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Fine-tune the MoE ``model`` (a path / ``zoo:NAME``, or a loaded model with ``tokenizer``) on
    ``data``; saved to ``out`` as ``lmfuse train`` saves (``train_log.jsonl``, resumable checkpoints)."""
    from lmfuse.core.loading import load_model, load_tokenizer
    from lmfuse.moe.hf import moe_blocks
    from lmfuse.moe.prompt import is_prompt_routed, routed_by_prompt

    problems = config.validate()
    if problems:
        raise ConfigError(problems, source="moe train")
    carried, routed = None, contextlib.nullcontext()
    if isinstance(model, str | Path):
        carried = Path(model) if is_prompt_routed(model) else None
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        model = load_model(model, dtype=config.dtype, device="cpu", plain=True)  # routed by prompt below
    try:
        moe_blocks(model)
    except ValueError as exc:
        raise ConfigError(str(exc), source="moe train") from None
    if carried is not None:
        routed = routed_by_prompt(_prompt_routed(model, carried, data, config))
    freeze_parts(model, config.freeze)
    model.config.router_aux_loss_coef = config.router_aux_loss_coef
    model.router_aux_loss_coef = config.router_aux_loss_coef  # the CausalLM reads its own copy
    model.config.output_router_logits = config.router_aux_loss_coef > 0  # the aux loss joins the loss

    def finish(trained, directory: Path) -> None:
        trained.config.output_router_logits = False  # saved off: inference needs no router logits
        for name, content in _prompt_router(carried).items():
            (directory / name).write_bytes(content)

    try:
        with routed:
            return train(
                model, data, out, config, tokenizer=tokenizer, overwrite=overwrite, progress=progress,
                resume=resume, stop=stop, method="moe train", finish=finish,
            )  # fmt: skip
    finally:
        model.config.output_router_logits = False
        for p in model.parameters():
            p.requires_grad_(True)


def _prompt_routed(model, directory: Path, data, config: MoETrainConfig):
    """The ``PromptRoutedMoE`` to train under; its data must be prompt + completion records."""
    from lmfuse.core.loading import resolve_model_path
    from lmfuse.graft.train import read_texts
    from lmfuse.moe.prompt import PromptRoutedMoE, read_router

    texts = read_texts(data, config.text_field)
    if plain := sum(isinstance(t, str) for t in texts):
        raise ConfigError(
            f"{directory} routes by prompt: training needs 'prompt' + 'completion' records to route each "
            f"example by its prompt; found {plain} of {len(texts)} examples with a text only",
            source="moe train",
        )
    weight, k = read_router(Path(resolve_model_path(directory)))
    return PromptRoutedMoE(model, weight, k)


def _prompt_router(directory: Path | None) -> dict[str, bytes]:
    from lmfuse.core.loading import resolve_model_path
    from lmfuse.moe.prompt import ROUTER_CONFIG, ROUTER_WEIGHTS

    if directory is None:
        return {}
    directory = Path(resolve_model_path(directory))
    return {name: (directory / name).read_bytes() for name in (ROUTER_CONFIG, ROUTER_WEIGHTS)}
