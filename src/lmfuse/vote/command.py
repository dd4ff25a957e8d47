"""``lmfuse vote INPUT.jsonl [MORE.jsonl ...] -o OUT.jsonl --similarity NAME[=WEIGHT] ...``."""

from __future__ import annotations

import argparse
import sys

SIM_HELP = (
    "similarity to vote with, NAME or NAME=WEIGHT; repeat to combine several (normalised per question). "
    "Names: char_rouge_l (default), word_rouge_l, embedding, chrf, bleu, exact, answer"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vote",
        help="crowd voting: keep the candidate most similar to all others",
        description="Crowd voting over JSONL: one file with {'id', 'candidates'} per line, or several "
        "files (one per model) with {'id', 'answer'} lines aligned by id.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT.jsonl", help="one candidates file, or one file per model"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="where to write the winners")
    p.add_argument("--similarity", action="append", metavar="NAME[=WEIGHT]", help=SIM_HELP)
    p.add_argument(
        "--normalize",
        choices=["zscore", "rank", "none"],
        help="per-question normalisation "
        "before combining several similarities (default zscore; none for a single one)",
    )
    p.add_argument(
        "--word-tokenizer",
        default="default",
        choices=["default", "rouge_score", "whitespace"],
        help="word_rouge_l tokens: default keeps CJK characters; rouge_score reproduces rouge-score",
    )
    p.add_argument(
        "--embedding-model",
        metavar="DIR",
        help="sentence-transformers model directory (default: the bundled all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--answer-kind",
        default="auto",
        choices=["auto", "number", "choice", "yesno", "boxed", "phrase", "regex", "text"],
        help="what the answer similarity extracts (text: whole candidate, whitespace normalised)",
    )
    p.add_argument(
        "--answer-regex",
        metavar="REGEX",
        help="answer pattern, last match (group 1 if any); implies --answer-kind regex",
    )
    p.add_argument(
        "--field",
        metavar="NAME",
        help="text field of per-model files (default: first of "
        "answer, response, output, text, completion, prediction)",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="rouge similarities: skip the LCS of candidates proven unable to win (same winners; their "
        "scores become upper bounds, listed in 'bounds')",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip bad lines and list them instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.jsonl if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_vote)


def _similarities(args: argparse.Namespace) -> tuple[list, list[float]]:
    from lmfuse.errors import ConfigError
    from lmfuse.vote import get_similarity

    options = {
        "word_rouge_l": {"tokenizer": args.word_tokenizer},
        "embedding": {"model": args.embedding_model},
        # --answer-regex alone means --answer-kind regex.
        "answer": {
            "kind": "regex" if args.answer_regex and args.answer_kind == "auto" else args.answer_kind,
            "pattern": args.answer_regex,
        },
    }
    sims, weights, problems = [], [], []
    for spec in args.similarity or ["char_rouge_l"]:
        name, _, weight = spec.partition("=")
        try:
            weights.append(float(weight) if weight else 1.0)
            sims.append(get_similarity(name, **options.get(name, {})))
        except ValueError:
            problems.append(f"--similarity {spec}: the weight must be a number, e.g. embedding=0.5")
        except ConfigError as exc:
            problems.extend(f"--similarity {spec}: {p}" for p in exc.problems)
    names = [spec.partition("=")[0] for spec in args.similarity or ["char_rouge_l"]]
    if args.answer_regex and "answer" not in names:
        problems.append("--answer-regex applies only with --similarity answer; add --similarity answer")
    if problems:
        raise ConfigError(problems)
    return sims, weights


def _records(questions, results):
    for q, r in zip(questions, results, strict=True):
        record = {"id": q.id, "winner": r.text, "index": r.index}
        if q.sources is not None:
            record["source"] = None if r.index is None else q.sources[r.index]
        record.update(scores=r.scores, margin=r.margin, tie=r.tie, tied=r.tied)
        if r.answers is not None:
            record.update(answer=None if r.index is None else r.answers[r.index], unparsed=r.unparsed)
        if r.pairs_total is not None:
            record.update(bounds=r.bounds, pairs_computed=r.pairs_computed, pairs_total=r.pairs_total)
        yield record


def _vote(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmfuse.core.atomic import check_output_file
    from lmfuse.errors import InputDataError
    from lmfuse.vote import vote_batch
    from lmfuse.vote.io import read_questions, write_jsonl_atomic

    out = Path(args.output)
    if any(out.resolve() == Path(p).resolve() for p in args.inputs):
        raise InputDataError(f"output {out} is also an input; choose another output path")
    check_output_file(out, args.overwrite)
    sims, weights = _similarities(args)
    questions, bad = read_questions(args.inputs, args.field, args.skip_bad)
    for b in bad:
        print(f"skipped {b}", file=sys.stderr)
    if not questions:
        raise InputDataError(f"no valid questions in {', '.join(args.inputs)}")
    results = vote_batch(
        [q.candidates for q in questions], sims, weights, normalize=args.normalize,
        progress=not args.no_progress, prune=args.prune,
    )  # fmt: skip
    count = write_jsonl_atomic(out, _records(questions, results), overwrite=args.overwrite)
    ties = sum(r.tie for r in results)
    names = "+".join(s.name for s in sims)
    skipped = f", {len(bad)} bad line(s) skipped" if bad else ""
    pruned = ""
    if args.prune:
        share = sum(r.pairs_computed for r in results) / max(1, sum(r.pairs_total for r in results))
        pruned = f", {share:.0%} of pairs computed"
    print(f"voted {count} question{'s' * (count != 1)} with {names}: {ties} ties{skipped}{pruned} -> {out}")
    return 0
