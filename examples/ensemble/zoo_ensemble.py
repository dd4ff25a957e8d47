"""Ensemble the zoo's specialists token by token, then a pair with different tokenizers.

python examples/ensemble/zoo_ensemble.py [--per-op 50]
"""

from __future__ import annotations

import argparse

from lmfuse import zoo
from lmfuse.ensemble import Ensemble


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-op", type=int, default=50, help="held-out questions per operation")
    args = ap.parse_args(argv)
    questions = zoo.eval_set(args.per_op)
    scores = {}
    for members in (["add", "sub", "mul"], ["base", "generalist"]):
        ens = Ensemble([f"zoo:{m}" for m in members], combine="prob")
        result = zoo.evaluate(
            lambda prompts, ens=ens: ens.generate(prompts, max_new_tokens=zoo.MAX_NEW_TOKENS), questions
        )
        name = "+".join(members)
        scores[name] = result.accuracy
        kind = "shared tokenizer" if ens.shared_vocab else "byte-aligned tokenizers"
        print(f"{name:<18} accuracy {result.accuracy:.2f} ({kind})")
    return scores


if __name__ == "__main__":
    main()
