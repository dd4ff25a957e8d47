"""The examples under examples/moe/ parse, hold no held-out question, and (with the zoo) build."""

import re
from pathlib import Path

import pytest

from lmfuse import zoo
from lmfuse.core.config import load_config
from lmfuse.moe.data import read_examples
from lmfuse.moe.recipe import BuildRecipe
from lmfuse.zoo.questions import held_out_pairs

EXAMPLES = Path(__file__).parents[2] / "examples" / "moe"
SYMBOL_OP = {"+": "add", "-": "sub", "*": "mul"}
HAVE_ZOO = all((zoo.ROOT / n / "config.json").is_file() for n in ("base", *zoo.SPECIALISTS))


def pairs(text: str) -> set[tuple[str, int, int]]:
    return {(SYMBOL_OP[s], int(a), int(b)) for a, s, b in re.findall(r"Q: (\d+)([-+*])(\d+)=", text)}


def test_recipe_parses_and_data_reads():
    recipe = load_config(BuildRecipe, EXAMPLES / "zoo_moe.yaml")
    assert recipe.validate() == [] and len(recipe.experts) == 3
    prompt = load_config(BuildRecipe, EXAMPLES / "zoo_moe_prompt.yaml")
    assert prompt.validate() == [] and prompt.routing == "prompt" and prompt.num_experts_per_tok == 1
    examples = read_examples(EXAMPLES / "arith.jsonl")
    assert {e.category for e in examples} == {"add", "sub", "mul"}


def test_examples_never_contain_held_out_questions():
    held = held_out_pairs()
    texts = "".join(
        (EXAMPLES / n).read_text() for n in ("zoo_moe.yaml", "zoo_moe_prompt.yaml", "arith.jsonl")
    )
    assert pairs(texts) and not pairs(texts) & held
    examples = read_examples(EXAMPLES / "arith.jsonl")
    assert all(e.prompt and e.text.startswith(e.prompt) for e in examples)  # completions are learned alone


def test_data_completions_are_the_zoos_own_solutions():
    from lmfuse.zoo.questions import Question

    for e in read_examples(EXAMPLES / "arith.jsonl"):
        ((op, a, b),) = pairs(e.prompt)
        assert e.text == Question("", op, a, b).text and e.category == op


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ZOO, reason="zoo weights not present")
def test_readme_commands_on_the_zoo(tmp_path, capsys):
    from lmfuse.cli import main

    assert main(["moe", "build", str(EXAMPLES / "zoo_moe.yaml"), str(tmp_path / "zoo-moe")]) == 0
    data = str(EXAMPLES / "arith.jsonl")
    assert (
        main(["moe", "inspect", str(tmp_path / "zoo-moe"), "--data", data, "--plot", str(tmp_path / "l.png")])
        == 0
    )
    args = [
        "moe",
        "train-router",
        str(tmp_path / "zoo-moe"),
        "--data",
        data,
        "--out",
        str(tmp_path / "t"),
        "--steps",
        "5",
    ]
    assert main(args) == 0
    assert "active parameters" in capsys.readouterr().out
    from lmfuse.core.checkpoint import CheckpointReader

    reader = CheckpointReader(tmp_path / "t")
    assert (
        reader.meta(reader.keys()[0])[1] == CheckpointReader(tmp_path / "zoo-moe").meta(reader.keys()[0])[1]
    )


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ZOO, reason="zoo weights not present")
def test_readme_prompt_routing_and_moe_train_commands_on_the_zoo(tmp_path, capsys):
    from lmfuse.cli import main
    from lmfuse.moe.prompt import is_prompt_routed

    data = str(EXAMPLES / "arith.jsonl")
    p, t = str(tmp_path / "zoo-moe-p"), str(tmp_path / "zoo-moe-p-tr")
    assert main(["moe", "build", str(EXAMPLES / "zoo_moe_prompt.yaml"), p]) == 0
    assert main(["moe", "train-router", p, "--data", data, "--out", t, "--steps", "5"]) == 0
    assert main(["zoo", "eval", t, "--per-op", "2"]) == 0
    assert is_prompt_routed(t) and "all=" in capsys.readouterr().out
    m = str(tmp_path / "zoo-moe")
    assert main(["moe", "build", str(EXAMPLES / "zoo_moe.yaml"), m]) == 0
    args = ["moe", "train-router", m, "--routing", "prompt", "--data", data, "--out", str(tmp_path / "p2"),
            "--steps", "3"]  # fmt: skip
    assert main(args) == 0 and is_prompt_routed(tmp_path / "p2")
    args = ["moe", "train", m, "--data", data, "--steps", "2", "--batch-size", "16", "--lr", "1e-3",
            "--freeze", "attention", "embeddings", "--out", str(tmp_path / "btx")]  # fmt: skip
    assert main(args) == 0 and "2 steps" in capsys.readouterr().out
