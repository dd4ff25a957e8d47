"""``lmfuse ensemble``: decode with several models as one (parsing and printing only)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ensemble",
        help="token-level probability ensemble: several models decode as one",
        description="Combine the next-token distributions of several causal LMs at every step. Members "
        "that share a tokenizer commit token ids; others are aligned by the bytes their tokens decode to.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH",
        help="a member: model directory, zoo:NAME, hub id, or a served model http://HOST:PORT/v1#NAME "
        "(with --tokenizer) (repeat; the first leads)",
    )
    p.add_argument(
        "--tokenizer",
        action="append",
        default=[],
        metavar="DIR",
        help="the tokenizer of each http:// --model, in order (directory, zoo:NAME or hub id)",
    )
    p.add_argument(
        "--members",
        metavar="YAML",
        help="a file with a members: list (paths, zoo:NAME, or {base_url, model, tokenizer, logprobs, "
        "api_key_env, on_failure, weight}); instead of --model",
    )
    p.add_argument(
        "--logprobs",
        type=int,
        default=20,
        metavar="K",
        help="http:// members: top-K log-probs asked per call (default 20, vLLM's default cap)",
    )
    p.add_argument(
        "--on-member-failure",
        default="error",
        choices=["error", "drop"],
        help="http:// members other than the first: stop with an error (default) or go on without it",
    )
    p.add_argument(
        "--speculate",
        type=int,
        default=0,
        metavar="K",
        help="speculative ensembling: the lead drafts K tokens, the others verify them (shared tokenizer)",
    )
    p.add_argument("--adaptive", action="store_true", help="with --speculate: adapt K to the accepted length")
    p.add_argument(
        "--weight",
        action="append",
        type=float,
        metavar="W",
        help="one weight per --model, in order (normalised; default equal)",
    )
    p.add_argument(
        "--combine",
        default="prob",
        choices=["prob", "logprob", "logit", "max"],
        help="how distributions are combined (default: prob, the weighted mean of probabilities)",
    )
    p.add_argument(
        "--align",
        default="auto",
        choices=["auto", "ids", "bytes"],
        help="ids when tokenizers are identical, bytes otherwise (default: auto)",
    )
    p.add_argument(
        "--union-top-k",
        type=int,
        default=10,
        metavar="K",
        help="byte alignment: candidates are the union of each member's top K tokens (0: all tokens)",
    )
    p.add_argument(
        "--gate",
        type=float,
        metavar="P",
        help="selective ensembling: ensemble only steps where the lead's top probability < P",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--prompt",
        action="append",
        help="a prompt (repeatable); the completion is printed (several: one JSON object per line)",
    )
    src.add_argument("--input", metavar="JSONL", help='prompts file: one {"prompt": ...} object per line')
    p.add_argument("-o", "--output", metavar="JSONL", help="with --input: write records + completion here")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int, help="makes sampling reproducible")
    p.add_argument("--chat", action="store_true", help="wrap prompts in each member's chat template")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--dtype", default="float32", help="float32 (default), bfloat16, float16 or auto (as saved)"
    )
    p.add_argument(
        "--device",
        action="append",
        metavar="DEV",
        help="one device per --model (e.g. cpu, cuda:0, cuda:1); default cpu",
    )
    p.add_argument(
        "--combine-device", metavar="DEV", help="where logits are combined (default: the first member's)"
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="print the vocabulary alignment and the share of ensembled steps to stderr",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lmfuse.ensemble import Ensemble
    from lmfuse.ensemble.prompts import read_prompts, write_completions
    from lmfuse.errors import ConfigError

    if args.input and not args.output:
        raise ConfigError("--input needs -o/--output: where to write the completions (JSONL)")
    if args.output and not args.input:
        raise ConfigError("-o/--output goes with --input; with --prompt completions are printed")
    records = read_prompts(args.input) if args.input else [{"prompt": p} for p in args.prompt]
    members, weights = member_specs(args)
    ens = Ensemble(
        members,
        weights=weights,
        speculate=args.speculate,
        adaptive=args.adaptive,
        combine=args.combine,
        align=args.align,
        union_top_k=args.union_top_k,
        gate=args.gate,
        devices=args.device,
        device=args.combine_device,
        dtype=args.dtype,
    )
    if args.report and ens.alignment:
        print(ens.alignment.summary(), file=sys.stderr)
    prompts = [r["prompt"] for r in records]
    with tqdm(
        total=len(prompts), desc="ensemble", unit="prompt", disable=not args.input, file=sys.stderr
    ) as bar:
        completions = ens.generate(
            prompts,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            stop=args.stop,
            seed=args.seed,
            chat=args.chat,
            batch_size=args.batch_size,
            on_prompt=bar.update,
        )
    if args.output:
        write_completions(args.output, records, completions)
        print(f"wrote {len(completions)} completions to {args.output}")
    elif len(completions) == 1:
        print(completions[0])
    else:  # completions may span lines: one JSON object per prompt keeps them apart
        for r, c in zip(records, completions, strict=True):
            print(json.dumps({**r, "completion": c}, ensure_ascii=False))
    if args.report:
        print(f"ensembled {ens.stats.ensembled_fraction:.1%} of {ens.stats.row_steps} steps", file=sys.stderr)
        if ens.stats.speculations:
            print(f"mean accepted length {ens.stats.mean_accepted:.2f} tokens per round", file=sys.stderr)
    for name, why in ens.stats.dropped.items():
        print(f"warning: member {name} was dropped: {why}", file=sys.stderr)
    return 0


def member_specs(args: argparse.Namespace) -> tuple[list, list[float] | None]:
    """Members and weights from ``--model``/``--tokenizer`` or ``--members FILE`` (all problems at once)."""
    from lmfuse.errors import ConfigError

    problems = []
    if bool(args.model) == bool(args.members):
        problems.append("members: expected --model (repeatable) or --members FILE, found "
                        + ("both" if args.model else "neither"))  # fmt: skip
    specs: list = []
    weights = args.weight
    if args.members:
        from lmfuse.core.config import load_yaml

        data = load_yaml(args.members)
        entries = data.get("members") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            problems.append(f"{args.members}: expected a non-empty 'members:' list")
            entries = []
        specs = [dict(e) if isinstance(e, dict) else e for e in entries]
        given = [e.pop("weight", None) if isinstance(e, dict) else None for e in specs]
        if any(w is not None for w in given):
            weights = [1.0 if w is None else w for w in given]
    remote = [m for m in args.model if m.startswith(("http://", "https://"))]
    if len(args.tokenizer) != len(remote):
        problems.append(
            f"--tokenizer: expected one per http:// --model ({len(remote)}), found {len(args.tokenizer)}"
        )
    for m in remote:
        if "#" not in m:
            problems.append(f"--model {m}: expected http://HOST:PORT/v1#MODEL_NAME (the served model's name)")
    if problems:
        raise ConfigError(problems)
    tokenizers = iter(args.tokenizer)
    for m in args.model:
        if m in remote:
            url, _, name = m.partition("#")
            m = {"base_url": url, "model": name, "tokenizer": next(tokenizers)}
        specs.append(m)
    for i, m in enumerate(specs):
        if isinstance(m, dict):
            m.setdefault("logprobs", args.logprobs)
            m.setdefault("on_failure", args.on_member_failure if i > 0 else "error")
    return specs, weights
