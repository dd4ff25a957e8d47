"""``lmfuse merge CONFIG OUT`` and ``lmfuse merge search``: parse, call the merge API, print."""

from __future__ import annotations

import argparse

from lmfuse.errors import ConfigError
from lmfuse.zoo.evaluate import MAX_NEW_TOKENS

SEARCH_HELP = """\
search: lmfuse merge search CONFIG [OUT.yaml] [--budget N] [--per-layer] [--eval FILE.jsonl] ...
  tune the recipe's per-model weights (and densities) with CMA-ES on the zoo's held-out questions
  or your JSONL of {"prompt", "answer"}; prints (and writes) the best recipe as YAML.
  See `lmfuse merge search --help`."""


def run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmfuse merge", description="Merge models from a mergekit YAML recipe.")
    p.add_argument("config", help="mergekit-format YAML recipe (see examples/merge/)")
    p.add_argument("out", nargs="?", help="output directory (optional with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="check and print the plan; write nothing")
    p.add_argument("--plot", metavar="FILE.png", help="save a picture of the per-layer parameters")
    p.add_argument("--device", help="where tensors are merged: cpu (default), cuda, cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (only once complete)")
    p.add_argument("--max-shard-size", default="2GB", help="largest weight file (default 2GB)")
    p.add_argument("--seed", type=int, help="random_seed for DARE/DELLA masks (overrides the recipe)")
    return p


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lmfuse merge search",
        description="Tune per-model weights (and densities) of a merge recipe with CMA-ES, in memory.",
    )
    p.add_argument("config", help="starting recipe (mergekit YAML); its method and models are kept")
    p.add_argument("out", nargs="?", help="write the best recipe here (YAML); it is printed in any case")
    p.add_argument("--budget", type=int, default=24, help="merges evaluated in all (default 24)")
    p.add_argument("--per-layer", action="store_true", help="one weight per model and layer, not per model")
    p.add_argument("--no-density", action="store_true", help="keep densities fixed (tune weights only)")
    p.add_argument(
        "--eval", metavar="FILE.jsonl", help='JSONL of {"prompt": ..., "answer": ...} (default: zoo)'
    )
    p.add_argument(
        "--per-op", type=int, default=8, help="zoo held-out questions per operation used (default 8, fixed)"
    )
    p.add_argument("--seed", type=int, default=0, help="CMA-ES seed (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                   help=f"tokens generated per answer (default {MAX_NEW_TOKENS}, the zoo's answer budget)")  # fmt: skip
    p.add_argument("--device", help="cpu (default) or cuda[:N]")
    return p


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="weight-space merging from mergekit YAML recipes (linear, slerp, ties, dare, ...), and search",
        description=run_parser().format_help() + "\n" + SEARCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="lmfuse merge CONFIG [OUT] [options] | lmfuse merge search CONFIG [OUT.yaml] [options]",
    )
    p.add_argument("args", nargs=argparse.PARSER, metavar="ARGS", help=argparse.SUPPRESS)
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    argv = list(args.args)
    if argv and argv[0] == "search":
        return search_handler(search_parser().parse_args(argv[1:]))
    return merge_handler(run_parser().parse_args(argv))


def merge_handler(args: argparse.Namespace) -> int:
    from lmfuse.graft.command import parse_size
    from lmfuse.graft.dryrun import human_bytes
    from lmfuse.merge.dryrun import plan_table, plot_plan
    from lmfuse.merge.plan import plan_merge
    from lmfuse.merge.recipe import load_merge_recipe
    from lmfuse.merge.write import check_device, merge

    shard = parse_size(args.max_shard_size)
    if args.out is None and not args.dry_run:
        raise ConfigError("OUT: an output directory is required (or pass --dry-run)")
    check_device(args.device)
    recipe = load_merge_recipe(args.config)
    if args.seed is not None:
        recipe.random_seed = args.seed
    if recipe.merge_method == "passthrough" and (args.dry_run or args.plot):
        raise ConfigError("passthrough is a graft: use `lmfuse graft run` for --dry-run and --plot")
    if args.dry_run:
        plan = plan_merge(recipe, out=args.out, overwrite=args.overwrite)
        print(plan_table(plan))
    else:
        plan = merge(recipe, args.out, device=args.device, overwrite=args.overwrite, max_shard_bytes=shard,
                     progress=True).plan  # fmt: skip
        what = (
            "passthrough (graft)"
            if plan is None
            else f"{plan.num_layers} layers, {human_bytes(plan.output_bytes)}"
        )
        print(f"wrote {args.out}: {recipe.merge_method}, {what}")
    if args.plot and plan is not None:
        print(f"plot: {plot_plan(plan, args.plot)}")
    return 0


def search_handler(args: argparse.Namespace) -> int:
    from lmfuse.core.atomic import atomic_write_text
    from lmfuse.merge.recipe import load_merge_recipe
    from lmfuse.merge.search import SearchConfig, search

    recipe = load_merge_recipe(args.config)
    config = SearchConfig(
        budget=args.budget, per_layer=args.per_layer, tune_density=not args.no_density, eval_file=args.eval,
        per_op=args.per_op, seed=args.seed, max_new_tokens=args.max_new_tokens, device=args.device,
    )  # fmt: skip
    result = search(recipe, config, progress=True)
    print(f"# start score {result.start_score:.3f}, best score {result.best_score:.3f} "
          f"after {result.evaluations} merges on {result.eval_description}")  # fmt: skip
    print(result.best_yaml, end="")
    if args.out:
        atomic_write_text(args.out, result.best_yaml)
        print(f"# wrote {args.out}")
    return 0
