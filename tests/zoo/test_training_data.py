import random

from lmfuse.exchange.config import AgentConfig
from lmfuse.exchange.prompts import Shown, eot_exchange
from lmfuse.zoo import eval_set
from lmfuse.zoo.questions import OPS, held_out_pairs
from lmfuse.zoo.training_data import MAX_SHOWN, ExampleStream, peer_prompt, shown_answers, wrong_answer


def test_peer_prompts_are_what_an_eot_qa_lines_agent_is_shown():
    q = eval_set(1)[0]
    agent = AgentConfig(name="a", backend="b", prompt_format="qa_lines")
    own, peers = Shown("a", "x", "85"), [Shown("b", "y", "75"), Shown("c", "z", "85")]
    assert peer_prompt(q, ["85", "75", "85"]) == eot_exchange(agent, q.prompt, own, peers)["prompt"]
    assert peer_prompt(q, ["85"]) == f"{q.prompt} 85\n{q.prompt}"


def test_wrong_answers_are_wrong_and_non_negative():
    rng = random.Random(0)
    for q in eval_set(20):
        for _ in range(20):
            w = wrong_answer(q, rng)
            assert w >= 0 and str(w) != q.answer
        shown = shown_answers(q, rng, 4)
        assert len(shown) == 4 and all(s.isdigit() for s in shown)


def test_stream_never_uses_a_held_out_question_in_any_format():
    held = {(op, a, b) for op, a, b in held_out_pairs()}
    stream = ExampleStream({"add": 1, "sub": 1, "mul": 1}, peer_share=0.5, seed=3)
    seen_k, ops = set(), set()
    for _ in range(200):
        batch = stream.batch(16)
        ks = {p.count("\n") for p, _ in batch}
        assert len(ks) == 1  # one prompt length per batch
        seen_k |= ks
        for prompt, completion in batch:
            lines = prompt.split("\n")
            assert len({line.rsplit(" A:", 1)[0] for line in lines}) == 1  # all about one question
            q = lines[-1]
            assert q.startswith("Q: ") and q.endswith(" A:")
            body = q[3:-4]
            op = next(o for o, s in (("add", "+"), ("sub", "-"), ("mul", "*")) if s in body)
            a, b = map(int, body.split({"add": "+", "sub": "-", "mul": "*"}[op]))
            assert (op, a, b) not in held
            ops.add(op)
            assert completion.endswith(f" so {eval(body)}")  # noqa: S307 - two integers and one operator
    assert seen_k == set(range(MAX_SHOWN + 1)) and ops == set(OPS)
