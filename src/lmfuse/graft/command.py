"""``lmfuse graft dus|splice|run`` and ``lmfuse train``: parse, call the graft API, print."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading

from lmfuse.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3}
_UNITS |= {"T": 1024**4, "TB": 1024**4}


def parse_size(text: str) -> int:
    """``"2GB"``, ``"500MB"``, ``"1048576"`` → bytes (binary units)."""
    m = _SIZE.match(text)
    if not m or float(m[1]) <= 0:
        raise ConfigError(f"--max-shard-size: expected a size like 2GB, 500MB or 1048576, found {text!r}")
    return int(float(m[1]) * _UNITS[m[2].upper()])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", help="output dtype: bfloat16, float16, float32 (default: keep the sources')")
    p.add_argument("--dry-run", action="store_true", help="check and print the plan; write nothing")
    p.add_argument(
        "--plot", metavar="FILE.png", help="with --dry-run (or not): save a picture of the layer map"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (only once complete)")
    p.add_argument("--max-shard-size", default="2GB", help="largest weight file (default 2GB)")
    p.add_argument(
        "--untie-embeddings", action="store_true", help="write an untied lm_head (from the head model)"
    )
    p.add_argument(
        "--no-check-tokenizer", action="store_true", help="accept models whose tokenizer files differ"
    )


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "graft",
        help="new checkpoints from layer slices (depth up-scaling, splicing)",
        description="Stack layer slices of one or more models into a new checkpoint, validated before "
        "anything is written, streamed with bounded memory, written atomically.",
    )
    sub = p.add_subparsers(dest="graft_command", metavar="PRESET", required=True)
    dus = sub.add_parser("dus", help="SOLAR depth up-scaling: [0, n-drop) + [drop, n) of one model")
    dus.add_argument("model", help="model directory, zoo:NAME or a hub id in the local cache")
    dus.add_argument("out", nargs="?", help="output directory (optional with --dry-run)")
    dus.add_argument("--drop", type=int, required=True, help="layers dropped from each copy (SOLAR: 8)")
    splice = sub.add_parser("splice", help="the first layers of model A, then the last layers of model B")
    splice.add_argument("a", help="model whose first layers (and embeddings) are used")
    splice.add_argument("b", help="model whose last layers (and final norm + lm_head) are used")
    splice.add_argument("out", nargs="?", help="output directory (optional with --dry-run)")
    splice.add_argument("--first", type=int, required=True, help="layers [0, FIRST) of A")
    splice.add_argument("--last", type=int, required=True, help="the last LAST layers of B")
    run = sub.add_parser("run", help="a YAML recipe (slices, embeddings, head, dtype)")
    run.add_argument("recipe", help="YAML recipe (see examples/graft/)")
    run.add_argument("out", nargs="?", help="output directory (optional with --dry-run)")
    for q in (dus, splice, run):
        _common(q)
        q.set_defaults(func=graft_handler)
    add_train_parser(subparsers)


def _num_layers(model: str) -> int:
    import json

    from lmfuse.errors import LmfuseError
    from lmfuse.graft.sources import resolve_directory

    try:
        config = json.loads((resolve_directory(model) / "config.json").read_text())
        return int(config["num_hidden_layers"])
    except (OSError, ValueError, KeyError) as exc:
        raise LmfuseError(
            f"model {model!r}: cannot read num_hidden_layers from config.json ({exc})"
        ) from None


def _need_out() -> None:
    raise ConfigError("OUT: an output directory is required (or pass --dry-run)")


def build_recipe(args: argparse.Namespace):
    """The recipe a preset or a YAML file describes, with the command-line options applied."""
    from lmfuse.core.loading import DTYPES
    from lmfuse.graft.recipe import dus_recipe, load_recipe, splice_recipe

    bad_dtype = [f"--dtype: expected one of {', '.join(DTYPES)}, found {args.dtype!r}"] * bool(
        args.dtype and args.dtype not in DTYPES
    )
    if args.graft_command == "dus":
        n = _num_layers(args.model)
        if not 0 < args.drop < n:
            raise ConfigError(
                [f"--drop {args.drop}: expected 1 to {n - 1} ({args.model!r} has {n} layers)"] + bad_dtype
            )
        recipe = dus_recipe(args.model, n, args.drop)
    elif args.graft_command == "splice":
        na, nb = _num_layers(args.a), _num_layers(args.b)
        problems = [f"--first {args.first}: expected 1 to {na} ({args.a!r} has {na} layers)"] * (
            not 0 < args.first <= na
        ) + [f"--last {args.last}: expected 1 to {nb} ({args.b!r} has {nb} layers)"] * (
            not 0 < args.last <= nb
        )
        if problems:
            raise ConfigError(problems + bad_dtype)
        recipe = splice_recipe(args.a, args.b, nb, args.first, args.last)
    else:
        recipe = load_recipe(args.recipe)
    if args.dtype:
        recipe.dtype = args.dtype
    if args.untie_embeddings:
        recipe.tie_word_embeddings = False
    if args.no_check_tokenizer:
        recipe.check_tokenizer = False
    return recipe


def graft_handler(args: argparse.Namespace) -> int:
    from lmfuse.core.atomic import check_image_path
    from lmfuse.graft.dryrun import human_bytes, plan_table, plot_plan
    from lmfuse.graft.plan import plan_graft
    from lmfuse.graft.write import graft

    problems: list[str] = []  # every option problem, reported with the recipe's in one pass
    for check in (
        lambda: parse_size(args.max_shard_size),
        lambda: args.plot and check_image_path(args.plot),  # a bad --plot must not come after the model
        lambda: args.out is None and not args.dry_run and _need_out(),
    ):
        try:
            check()
        except ConfigError as exc:
            problems += exc.problems
    try:
        recipe = build_recipe(args)
        if problems:
            plan_graft(recipe, out=args.out, overwrite=args.overwrite)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    shard = parse_size(args.max_shard_size)
    if args.dry_run:
        plan = plan_graft(recipe, out=args.out, overwrite=args.overwrite, check_config=False)
        print(plan_table(plan))
    else:
        plan = graft(recipe, args.out, overwrite=args.overwrite, max_shard_bytes=shard, progress=True).plan
        print(
            f"wrote {args.out}: {len(plan.layer_map)} layers, {plan.num_parameters:,} parameters, "
            f"{human_bytes(plan.output_bytes)}"
        )
    if args.plot:
        print(f"plot: {plot_plan(plan, args.plot)}")
    return 0


@contextlib.contextmanager
def _first_ctrl_c_stops():
    """The first Ctrl-C asks training to save a checkpoint and stop after this step; a second one aborts."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (checkpoint kept); Ctrl-C again to abort", file=sys.stderr)

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old)


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="continued pre-training of a causal LM on text or JSONL files (transformers Trainer)",
        description="Causal-LM training over transformers' Trainer (accelerate, FSDP and DeepSpeed work "
        "as with Trainer). Text files: one example per line; JSONL: one object per line with a text field, "
        "or prompt and completion fields (the completion alone is learned).",
    )
    add_train_arguments(p)
    p.set_defaults(func=train_handler)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``lmfuse train`` (also ``lmfuse moe train``'s)."""
    p.add_argument("model", help="model directory, zoo:NAME or cached hub id")
    p.add_argument(
        "--data", nargs="+", required=True, metavar="FILE",
        help=".txt or .jsonl files (JSONL: a text field, or 'prompt' + 'completion': the completion is learned)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--out", required=True, help="output directory for the trained model")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per device per step (default 8)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per example (default 512)")
    p.add_argument("--packing", action="store_true", help="concatenate examples into full --seq-len blocks")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default text)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="weights dtype when loading MODEL (default float32)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 mixed precision (GPUs that support it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10, help="log the loss every N steps (default 10)")
    p.add_argument(
        "--save-every", type=int, default=0, metavar="N",
        help="save a checkpoint in OUT/checkpoints every N steps (default 0: only when stopped by Ctrl-C)",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace --out if lmfuse wrote it (an earlier model or an interrupted run) and start again",
    )  # fmt: skip


def train_settings(args: argparse.Namespace) -> dict:
    """``TrainConfig`` fields from the arguments of ``add_train_arguments``."""
    return dict(
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, seq_len=args.seq_len, packing=args.packing,
        text_field=args.text_field, warmup_steps=args.warmup_steps, seed=args.seed, log_every=args.log_every,
        dtype=args.dtype, bf16=args.bf16, save_every=args.save_every,
    )  # fmt: skip


def train_handler(args: argparse.Namespace, run=None, config=None) -> int:
    """``lmfuse train`` (``run``/``config``: another trainer over the same arguments, e.g. ``moe train``)."""
    from lmfuse.graft.train import TrainConfig, train

    run = run or train
    config = config or TrainConfig(**train_settings(args))
    with _first_ctrl_c_stops() as stop:
        result = run(
            args.model, args.data, args.out, config, overwrite=args.overwrite, progress=True,
            resume=args.resume, stop=stop,
        )  # fmt: skip
    print(
        f"wrote {result.out}: {result.steps} steps on {result.examples} examples, loss "
        f"{result.first_loss:.4f} -> {result.last_loss:.4f}; log: {result.log_file}"
    )
    return 0
