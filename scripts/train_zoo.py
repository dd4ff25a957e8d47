"""Train the zoo v2: a tiny Llama base, three MLP-only specialists of it, one Qwen3 generalist with BPE.

Every member learns the scratchpad answers of ``lmfuse.zoo.questions`` and reads peers: a share of its
training prompts carry other solutions of the same question (``lmfuse.zoo.training_data``).
Reproducible (fixed seeds, fixed thread count). Run from the repository root:

    .venv/bin/python scripts/train_zoo.py              # about 25 min on 2 cores, writes src/lmfuse/zoo/models/
                                                       # (two members at a time, one thread each)
    .venv/bin/python scripts/train_zoo.py --only add   # retrain one specialist from the committed base
    .venv/bin/python scripts/train_zoo.py --quick      # a smoke run into /tmp/zoo-quick, a minute

Each model is saved in fp16 with its tokenizer and a model card (README.md) whose accuracy table is
measured on the committed fp16 weights with ``lmfuse.zoo.evaluate``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM

from lmfuse import testing, zoo
from lmfuse.core.loading import load_model_and_tokenizer
from lmfuse.zoo.questions import OPS, VALIDATION_PER_OP, sample_question, validation_set
from lmfuse.zoo.training_data import ExampleStream

MIX_ALL = {"add": 1 / 3, "sub": 1 / 3, "mul": 1 / 3}
BPE_VOCAB = 400  # 256 bytes + 4 specials + 140 merges (digit pairs, " so ", "Q: ", ...)
PEER_SHARE = 0.5  # share of training prompts that show other solutions first
SPECIALIST_MIX = 1.0  # share of a specialist's fine-tuning data on its own operation

CHECK_EVERY = 40  # steps between two validation checks (on lmfuse.zoo.validation_set, 60 per op)
# name: (architecture, seed, max steps, lr, mix, (stop when this op's or "all" validation accuracy >= x)).
# A member trains until it reaches its target, so the zoo stays a playground with errors to fix, not a set
# of perfect models (trained to the end, base and generalist pass 0.95). Specialists: MLP-only of base.
PLAN = {
    "base": ("llama", 0, 1400, 3e-3, {"add": 0.4, "sub": 0.35, "mul": 0.25}, ("all", 0.60)),
    "add": ("llama", 10, 500, 2e-3, None, ("add", 0.98)),
    "sub": ("llama", 11, 500, 2e-3, None, ("sub", 0.95)),
    "mul": ("llama", 12, 500, 2e-3, None, ("mul", 0.85)),
    "generalist": ("qwen3", 20, 1400, 3e-3, MIX_ALL, ("all", 0.60)),
}
PHASES = (("base", "generalist"), ("mul", "add", "sub"))  # members of a phase train in parallel processes


def specialist_mix(op: str) -> dict[str, float]:
    return {o: (SPECIALIST_MIX if o == op else (1 - SPECIALIST_MIX) / 2) for o in OPS}


def model_config(arch: str, vocab_size: int):
    """Llama (base and specialists: 4 layers, hidden 128) or Qwen3 (generalist: 3 layers, hidden 160)."""
    if arch == "llama":
        return testing.tiny_config(
            "llama", vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
            num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True,
        )  # fmt: skip
    return testing.tiny_config(
        "qwen3", vocab_size=vocab_size, hidden_size=160, intermediate_size=448, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=40, max_position_embeddings=256,
        tie_word_embeddings=True,
    )  # fmt: skip


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Scratchpad lines to train the generalist's BPE on (the held-out set is irrelevant to a tokenizer)."""
    rng = random.Random(seed)
    return [sample_question(rng.choice(OPS), rng).text for _ in range(n)]


class Batches:
    """Training batches from an ``ExampleStream``: prompt tokens are masked out, solution + EOS learned."""

    def __init__(self, tokenizer, stream: ExampleStream, batch_size: int) -> None:
        self.tok, self.stream, self.batch_size = tokenizer, stream, batch_size

    def __next__(self) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        for prompt, completion in self.stream.batch(self.batch_size):
            p = self.tok(prompt)["input_ids"]
            full = self.tok(prompt + completion)["input_ids"] + [self.tok.eos_token_id]
            rows.append(full)
            labels.append([-100] * len(p) + full[len(p) :])
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tok.pad_token_id)
        lab = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, y) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)], lab[i, : len(y)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(y), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def train(model, tok, batches: Batches, steps: int, lr: float, target: tuple[str, float], desc: str) -> dict:
    """AdamW, linear warmup then constant lr, until the validation accuracy reaches ``target`` (checked
    every ``CHECK_EVERY`` steps) or ``steps``; returns the loss curve and where it stopped."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warmup, 1.0))
    val, (key, goal) = validation_set(), target
    losses: list[float] = []
    checks: list[tuple[int, float]] = []
    bar = tqdm(range(1, steps + 1), desc=desc, mininterval=5.0)
    for step in bar:
        model.train()
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(
            loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}", val=checks[-1][1] if checks else 0
        )
        if step % CHECK_EVERY == 0 or step == steps:
            model.eval()
            acc = zoo.evaluate(zoo.hf_generate_fn(model, tok), val, batch_size=len(val)).row()[key]
            checks.append((step, round(acc, 4)))
            if acc >= goal:
                break
    bar.close()
    model.eval()
    return {"losses": losses, "checks": checks, "steps": len(losses)}


def save_and_measure(model, tokenizer, out: Path, name: str, card: dict) -> dict[str, float]:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(d)
    model.generation_config.save_pretrained(d)
    tokenizer.save_pretrained(d)
    m, t = load_model_and_tokenizer(d, dtype="float32")
    result = zoo.evaluate(zoo.hf_generate_fn(m, t), batch_size=100)
    acc = {k: round(v, 4) for k, v in result.row().items()}
    arch = type(m).__name__
    card = {
        **card,
        "architecture": arch,
        "accuracy": acc,
        "parameters": sum(p.numel() for p in m.parameters()),
    }
    (d / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    table = "\n".join(f"| {k} | {v:.2f} |" for k, v in acc.items())
    c = m.config
    (d / "README.md").write_text(
        f"# zoo/{name}\n\n{card['description']}\n\n"
        f"- architecture: {arch}, {card['parameters']:,} parameters ({c.num_hidden_layers} layers, hidden "
        f"{c.hidden_size}, MLP {c.intermediate_size}), fp16 weights\n"
        f"- tokenizer: {card['tokenizer']}\n- data: {card['data']}\n"
        f"- steps: {card['steps']} (batch {card['batch_size']}, lr {card['lr']}; stopped when the "
        f"'{card['stop_at']['validation']}' accuracy on {3 * VALIDATION_PER_OP} validation questions "
        f"reached {card['stop_at']['accuracy']}, at most {card['max_steps']}), seed {card['seed']}, "
        f"{card['seconds']} s on {card['threads']} threads\n"
        f"- held-out accuracy (`lmfuse.zoo.evaluate`, greedy, {result.n} questions):\n\n"
        f"| op | accuracy |\n|---|---|\n{table}\n\nMade by `scripts/train_zoo.py`.\n"
    )
    print(f"{name}: {acc}", flush=True)
    return acc


def data_note(mix: dict[str, float]) -> str:
    ops = " / ".join(f"{o} {w:.0%}" for o, w in mix.items())
    return (
        f"scratchpad solutions ({ops}); {PEER_SHARE:.0%} of prompts first show 1-5 solved lines of the "
        "question (right or with a slipped step) in the qa_lines format"
    )


def write_zoo_readme(out: Path) -> None:
    """Write the zoo's README with the accuracy table read from each model's training.json."""
    table, desc = [], []
    for name in zoo.MEMBERS:
        card_path = out / name / "training.json"
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        acc = card["accuracy"]
        table.append(f"| {name} | " + " | ".join(f"{acc[k]:.2f}" for k in ("all", *OPS)) + " |")
        desc.append(
            f"- `{name}`: {card['description']} {card['architecture']}, {card['parameters']:,} parameters; "
            f"{card['steps']} steps, seed {card['seed']}; {card['tokenizer']}."
        )
    text = (
        "# The zoo\n\n"
        "Tiny models (Llama and Qwen3 architectures, under 1M parameters each, fp16) trained here on "
        "synthetic arithmetic by `scripts/train_zoo.py` (fixed seeds, one thread per member, two members "
        "at a time; about 20 minutes on 2 cores). Every method and `lmfuse demo` use them.\n\n"
        "Task: addition and subtraction over 0-99 (non-negative results), multiplication of 0-99 by 0-9, "
        "answered with a short scratchpad, units digit first, carry or borrow written out, ending with "
        "the result after `so` (`lmfuse.zoo.questions`):\n\n"
        "    Q: 37+48= A: 7+8=15,3+4+1=8 so 85\n"
        "    Q: 84-37= A: 14-7=7,8-1-3=4 so 47\n"
        "    Q: 37*8= A: 7*8=56,3*8+5=29 so 296\n\n"
        f"Peer reading: {PEER_SHARE:.0%} of every member's training prompts first show 1-5 solved lines "
        "of the same question, right or with one slipped step (a units or tens step off, a dropped or "
        "extra carry or borrow), exactly as EoT and MoA show peers to `qa_lines` agents "
        "(`Q: 37+48= A: 7+8=15,3+4+1=8 so 85\\nQ: 37+48= A: 7+8=15,3+4+0=7 so 75\\nQ: 37+48= A:`); the "
        "target is always the correct scratchpad (`lmfuse.zoo.training_data`). A member trains until its "
        "accuracy on a validation set (60 questions per operation, excluded from training too) reaches "
        "its target, so that the zoo keeps errors to fix. The held-out set (`lmfuse.zoo.eval_set()`, 100 "
        "questions per operation, fixed seed) is excluded from all training data, in every format. "
        f"Answers are scored with the EoT rule (`zoo.extract_number`); the decoding budget is "
        f"`zoo.MAX_NEW_TOKENS` = {zoo.MAX_NEW_TOKENS} tokens.\n\n"
        + "\n".join(desc)
        + "\n\nHeld-out accuracy, greedy decoding, measured on the committed fp16 weights with "
        "`lmfuse.zoo.evaluate` (a test checks that this table matches):\n\n"
        "| model | all | add | sub | mul |\n|---|---|---|---|---|\n" + "\n".join(table) + "\n\n"
        "Reproduce: `.venv/bin/python scripts/train_zoo.py` (or `--only add` to retrain one specialist "
        "from the committed base).\n"
    )
    (out.parent / "README.md").write_text(text)


def train_member(name: str, args) -> None:
    """Train, save and measure one member (in its own process, on ``args.threads`` threads)."""
    torch.set_num_threads(args.threads)
    out, char = args.out, testing.char_tokenizer()
    arch, seed, max_steps, lr, mix, target = PLAN[name]
    max_steps = max(1, round(max_steps * args.scale))
    torch.manual_seed(seed)
    start = time.time()
    common = {"batch_size": args.batch_size, "seed": seed, "max_steps": max_steps, "lr": lr,
              "threads": args.threads, "stop_at": {"validation": target[0], "accuracy": target[1]}}  # fmt: skip
    if name == "base":
        tok, model = char, AutoModelForCausalLM.from_config(model_config(arch, len(char)))
        card = {"description": "Base model: trained from scratch on all three operations.",
                "tokenizer": "character-level (lmfuse.testing.char_tokenizer)"}  # fmt: skip
    elif name == "generalist":
        tok = testing.bpe_tokenizer(corpus(), vocab_size=BPE_VOCAB)
        model = AutoModelForCausalLM.from_config(model_config(arch, len(tok)))
        card = {"description": f"Generalist: another architecture (Qwen3) and tokenizer (byte-level BPE, "
                f"{len(tok)} tokens), trained from scratch.",
                "tokenizer": "byte-level BPE trained on scratchpad lines (lmfuse.testing.bpe_tokenizer)"}  # fmt: skip
    else:
        mix = specialist_mix(name)
        model, tok = load_model_and_tokenizer(out / "base", dtype="float32")
        for pname, p in model.named_parameters():  # MLP-only fine-tune: experts differ in their FFNs
            p.requires_grad = ".mlp." in pname
        card = {"description": f"Specialist: MLP-only fine-tune of zoo/base (attention, norms, embeddings "
                f"frozen), {SPECIALIST_MIX:.0%} on '{name}'.", "tokenizer": "character-level, same as zoo/base"}  # fmt: skip
    val = frozenset((q.op, q.a, q.b) for q in validation_set())
    batches = Batches(tok, ExampleStream(mix, PEER_SHARE, seed=seed + 1, exclude=val), args.batch_size)
    run = train(model, tok, batches, max_steps, lr, target, name)
    losses = run["losses"]
    card = {**card, **common, "steps": run["steps"], "validation": run["checks"], "data": data_note(mix),
            "seconds": round(time.time() - start),
            "loss": {"first": round(losses[0], 4), "last50": round(sum(losses[-50:]) / len(losses[-50:]), 4)}}  # fmt: skip
    save_and_measure(model, tok, out, name, card)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("src/lmfuse/zoo/models"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every member's steps (experiments)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per member (kept in the cards)")
    ap.add_argument("--jobs", type=int, default=2, help="members trained at once, one process each")
    ap.add_argument("--only", nargs="*", default=None, help="train only these members (base first)")
    ap.add_argument("--quick", action="store_true", help="a few steps into /tmp/zoo-quick")
    args = ap.parse_args()
    if args.quick:
        args.out, args.scale = Path("/tmp/zoo-quick"), 0.02
    start = time.time()
    only = set(args.only or zoo.MEMBERS)
    unknown = sorted(only - set(zoo.MEMBERS))
    if unknown:
        ap.error(f"--only: expected names among {', '.join(zoo.MEMBERS)}, found {', '.join(unknown)}")
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter per member: no shared torch state
    for phase in PHASES:
        names = [n for n in phase if n in only]
        with concurrent.futures.ProcessPoolExecutor(
            max(1, min(args.jobs, len(names) or 1)), mp_context=spawn
        ) as pool:
            for f in [pool.submit(train_member, n, args) for n in names]:
                f.result()
        print(f"phase {', '.join(phase)} done at {time.time() - start:.0f} s", flush=True)
    if not args.quick:
        write_zoo_readme(args.out)
    print(f"done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
