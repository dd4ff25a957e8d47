import random

from lmfuse.exchange.config import AgentConfig
from lmfuse.exchange.prompts import Shown, eot_exchange
from lmfuse.vote.extract import extract_number
from lmfuse.zoo import eval_set
from lmfuse.zoo.questions import OPS, Question, held_out_pairs
from lmfuse.zoo.training_data import MAX_SHOWN, ExampleStream, peer_prompt, shown_solutions, wrong_solution


def test_peer_prompts_are_what_an_eot_qa_lines_agent_is_shown():
    q = Question("", "add", 37, 48)
    agent = AgentConfig(name="a", backend="b", prompt_format="qa_lines")
    right, slip = " 7+8=15,3+4+1=8 so 85", " 7+8=15,3+4+0=7 so 75"
    own, peers = Shown("a", right, "85"), [Shown("b", slip, "75"), Shown("c", right, "85")]
    assert peer_prompt(q, [right, slip, right]) == eot_exchange(agent, q.prompt, own, peers)["prompt"]
    assert peer_prompt(q, [slip]) == f"Q: 37+48= A:{slip}\nQ: 37+48= A:"


def test_wrong_solutions_are_wrong_consistent_slips():
    rng = random.Random(0)
    for q in eval_set(20):
        for _ in range(20):
            w = wrong_solution(q, rng)
            value = extract_number(w)
            assert value is not None and int(value) >= 0 and value != q.answer
            # one step slipped: the text differs from the right one, same shape
            assert w != q.solution and w.count(",") == 1 and w.count("=") == 2
        shown = shown_solutions(q, rng, 4)
        assert len(shown) == 4 and all(extract_number(s) is not None for s in shown)


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
