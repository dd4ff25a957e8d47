"""``lmfuse moe build | train-router | train | inspect``: parse, call the API, print."""

from __future__ import annotations

import argparse

MAX_TOKENS_HELP = "refuse examples longer than N tokens (default: the model's context length)"


def _check_examples(args, model, tok, examples) -> None:
    from lmfuse.core.limits import check_fits, input_limit
    from lmfuse.errors import ConfigError

    if args.max_input_tokens is not None and args.max_input_tokens < 1:
        raise ConfigError(f"--max-input-tokens: expected a positive integer, found {args.max_input_tokens}")
    limit = input_limit(model.config, args.max_input_tokens)
    check_fits(
        [e.text for e in examples], tok, limit, lambda i: f"{args.data}: example {i + 1}", what="example"
    )


def add_parser(subparsers) -> None:
    moe = subparsers.add_parser("moe", help="mixture-of-experts: build MoE checkpoints from dense models, "
                                "train their routers, inspect routing")  # fmt: skip
    sub = moe.add_subparsers(dest="moe_command", metavar="SUBCOMMAND", required=True)

    b = sub.add_parser(
        "build", help="build a native transformers MoE from a base and dense experts (YAML recipe)"
    )
    b.add_argument("recipe", help="recipe YAML (base, experts with prompts, architecture, router_init, ...)")
    b.add_argument("out", help="output model directory (written atomically)")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    b.set_defaults(func=_build)

    t = sub.add_parser("train-router", help="train only the routers of an MoE model (everything else frozen)")
    t.add_argument("model", help="MoE model directory (or zoo:NAME)")
    t.add_argument(
        "--data",
        required=True,
        help="training data: .jsonl with 'text' (or 'prompt' + 'completion': learn the completion only), or text lines",
    )
    t.add_argument("--out", required=True, help="where to save the model with trained routers")
    t.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    t.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    t.add_argument("--batch-size", type=int, default=16, help="examples per step (default 16)")
    t.add_argument("--seed", type=int, default=0, help="default 0")
    t.add_argument("--overwrite", action="store_true", help="replace --out if lmfuse wrote it")
    t.add_argument("--max-input-tokens", type=int, metavar="N", help=MAX_TOKENS_HELP)
    t.add_argument(
        "--routing",
        choices=("token", "prompt"),
        help="which router to train: the per-token gates, or the prompt router (one decision per prompt; "
        "adds one to a token-routed model); default: the model's own routing",
    )
    t.set_defaults(func=_train_router)

    tr = sub.add_parser(
        "train",
        help="fine-tune an MoE's experts and routers together (Branch-Train-MiX; transformers Trainer)",
        description="lmfuse train on an MoE model, with transformers' load-balancing loss added and parts "
        "optionally frozen; checkpoints, --resume and Ctrl-C as lmfuse train.",
    )
    from lmfuse.graft.command import add_train_arguments

    add_train_arguments(tr)
    tr.add_argument(
        "--freeze", nargs="+", default=[], choices=("attention", "embeddings", "experts", "routers"),
        help="parts to leave as built (attention includes the norms)",
    )  # fmt: skip
    tr.add_argument(
        "--router-aux-loss-coef", type=float, default=0.01, metavar="W",
        help="weight of the load-balancing loss (transformers': k at balance; default 0.01, 0: off)",
    )  # fmt: skip
    tr.set_defaults(func=_moe_train)

    i = sub.add_parser("inspect", help="per layer, each expert's share of tokens and the winner per category")
    i.add_argument("model", help="MoE model directory (or zoo:NAME)")
    i.add_argument("--data", required=True, help=".jsonl with 'text' and optional 'category', or text lines")
    i.add_argument("--plot", help="save a layers × experts heat map (PNG) here")
    i.add_argument("--max-input-tokens", type=int, metavar="N", help=MAX_TOKENS_HELP)
    i.set_defaults(func=_inspect)


def _build(args: argparse.Namespace) -> int:
    from lmfuse.core.config import load_config, load_yaml
    from lmfuse.errors import ConfigError
    from lmfuse.moe.build import build_moe, missing_sources
    from lmfuse.moe.recipe import BuildRecipe

    try:
        recipe = load_config(BuildRecipe, args.recipe)
    except ConfigError as exc:  # also name the models that cannot be found: every problem in one pass
        raise ConfigError(
            exc.problems + missing_sources(load_yaml(args.recipe)), source=args.recipe
        ) from None
    result = build_moe(recipe, args.out, overwrite=args.overwrite, progress=True)
    print(f"built {result.architecture} with {result.num_experts} experts (top-{result.num_experts_per_tok}) "
          f"at {result.out} in {result.seconds:.1f} s")  # fmt: skip
    print(f"total parameters:  {result.total_params:,}")
    print(f"active parameters: {result.active_params:,} per token")
    return 0


def _train_router(args: argparse.Namespace) -> int:
    from lmfuse.core.atomic import atomic_output_dir, check_output_dir
    from lmfuse.errors import ConfigError
    from lmfuse.moe.data import read_examples
    from lmfuse.moe.train_router import TrainRouterConfig

    if args.steps < 1 or args.batch_size < 1 or args.lr <= 0:
        raise ConfigError("--steps and --batch-size must be positive integers and --lr a positive number")
    check_output_dir(args.out, args.overwrite)
    examples = read_examples(args.data)
    stored = _stored_dtype(args.model)
    model, tok, routing = _load_for_routing(args)
    cfg = TrainRouterConfig(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    result = _train(model, tok, examples, cfg, routing, args)
    if stored is not None:
        model.to(stored)  # trained in fp32, saved as the input was stored
    with atomic_output_dir(args.out, overwrite=args.overwrite) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _write_router_log(tmp, args, cfg, result)
    what, steps = ("prompt-router", "L-BFGS evaluations") if routing == "prompt" else ("router", "steps")
    print(f"trained {result.trained_params:,} {what} parameters ({result.frozen_params:,} frozen) "
          f"for {len(result.losses)} {steps}: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")  # fmt: skip
    print(f"saved to {args.out}")
    return 0


def _load_for_routing(args: argparse.Namespace):
    """``(model, tokenizer, routing)``: a ``PromptRoutedMoE`` when the model has or gets a prompt router."""
    import torch

    from lmfuse.moe.prompt import PromptRoutedMoE, is_prompt_routed, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(args.model, dtype="float32")
    inner = model.model if isinstance(model, PromptRoutedMoE) else model
    _require_moe(inner, args.model)
    routing = args.routing or ("prompt" if is_prompt_routed(args.model) else "token")
    if routing == "prompt" and not isinstance(model, PromptRoutedMoE):  # a new router: uniform at first
        cfg = inner.config
        experts = getattr(cfg, "num_local_experts", None) or cfg.num_experts
        model = PromptRoutedMoE(inner, torch.zeros(experts, 2 * cfg.hidden_size), cfg.num_experts_per_tok)
    return model, tok, routing


def _train(model, tok, examples, cfg, routing: str, args: argparse.Namespace):
    from lmfuse.errors import InputDataError
    from lmfuse.moe.prompt import PromptRoutedMoE
    from lmfuse.moe.train_prompt_router import train_prompt_router
    from lmfuse.moe.train_router import train_router

    inner = model.model if isinstance(model, PromptRoutedMoE) else model
    _check_examples(args, inner, tok, examples)
    if routing == "token":
        return train_router(inner, tok, examples, cfg, progress=True)
    try:
        return train_prompt_router(model, tok, examples, cfg, progress=True)
    except ValueError as exc:
        raise InputDataError(f"{args.data}: {exc}") from None


def _moe_train(args: argparse.Namespace) -> int:
    from lmfuse.graft.command import train_handler, train_settings
    from lmfuse.moe.train import MoETrainConfig, moe_train

    config = MoETrainConfig(
        **train_settings(args), freeze=args.freeze, router_aux_loss_coef=args.router_aux_loss_coef
    )
    return train_handler(args, run=moe_train, config=config)


def _stored_dtype(name: str):
    """The dtype a model directory's config says its weights are stored in, or ``None``."""
    import torch
    from transformers import AutoConfig

    from lmfuse.core.loading import resolve_model_path

    dtype = getattr(AutoConfig.from_pretrained(resolve_model_path(name)), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _require_moe(model, name: str) -> None:
    from lmfuse.errors import IncompatibleModelsError
    from lmfuse.moe.hf import moe_blocks

    try:
        moe_blocks(model)
    except ValueError as exc:
        raise IncompatibleModelsError(f"{name}: {exc}") from None


def _inspect(args: argparse.Namespace) -> int:
    from lmfuse.core.atomic import check_image_path
    from lmfuse.moe.data import read_examples
    from lmfuse.moe.inspect import inspect_routing, plot_load
    from lmfuse.moe.prompt import PromptRoutedMoE, load_model_and_tokenizer

    if args.plot:
        check_image_path(args.plot)
    examples = read_examples(args.data)
    model, tok = load_model_and_tokenizer(args.model, dtype="float32")
    inner = model.model if isinstance(model, PromptRoutedMoE) else model
    _require_moe(inner, args.model)
    _check_examples(args, inner, tok, examples)
    result = inspect_routing(model, tok, examples)
    n_experts = len(result.shares[0])
    print(f"{result.tokens} tokens, {len(examples)} examples; share of routed tokens per expert:")
    print("layer  " + " ".join(f"  e{e:<3d}" for e in range(n_experts)))
    for layer, row in enumerate(result.shares):
        print(f"{layer:5d}  " + " ".join(f"{s:6.3f}" for s in row))
    winners = result.winners()
    if winners:
        print("winning expert per category (per layer):")
        for cat, per_layer in winners.items():
            print(f"  {cat:12s} " + " ".join(str(e) for e in per_layer))
    if args.plot:
        print(f"plot: {plot_load(result, args.plot)}")
    return 0


def _write_router_log(tmp, args: argparse.Namespace, cfg, result) -> None:
    """The loss per step (``train_log.jsonl``), the settings and the provenance, beside the model."""
    import json

    from lmfuse.core.config import dump_yaml
    from lmfuse.core.export import PROVENANCE_FILE, provenance

    rows = [json.dumps({"step": i + 1, "loss": float(loss)}) for i, loss in enumerate(result.losses)]
    (tmp / "train_log.jsonl").write_text("".join(f"{r}\n" for r in rows))
    (tmp / "lmfuse_train_router.yaml").write_text(dump_yaml(cfg))
    record = provenance({"model": str(args.model), "data": str(args.data)}, method="moe train-router")
    (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
