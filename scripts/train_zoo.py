"""Train the zoo: a tiny Llama base on synthetic arithmetic, three specialists, one BPE generalist.

Reproducible (fixed seeds, fixed thread count). Run from the repository root:

    .venv/bin/python scripts/train_zoo.py            # ~10 min on 2 cores, writes src/lmfuse/zoo/models/
    .venv/bin/python scripts/train_zoo.py --quick    # a smoke run into /tmp, seconds

Each model is saved in fp16 with its tokenizer and a model card (README.md) whose accuracy table is
measured on the committed fp16 weights with ``lmfuse.zoo.evaluate``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from lmfuse import testing, zoo
from lmfuse.core.loading import load_model_and_tokenizer
from lmfuse.zoo.questions import OPS, held_out_pairs, sample_question

MIX_ALL = {"add": 1 / 3, "sub": 1 / 3, "mul": 1 / 3}
SPECIALIST_MIX = 0.9  # share of a specialist's fine-tuning data on its own operation
BPE_VOCAB = 400  # 256 bytes + 4 specials + 140 merges (digit pairs, " A:", ...)
SPECIALIST_STEPS = {"add": 600, "sub": 600, "mul": 1500}  # multiplication is the hardest to learn


def arithmetic_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [sample_question(rng.choice(OPS), rng).text for _ in range(n)]


def model_config(vocab_size: int) -> LlamaConfig:
    """The zoo's architecture: lmfuse.testing's tiny Llama, scaled up to about 0.86M parameters."""
    return testing.tiny_config(
        "llama",
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )


class Batches:
    """Random training batches: prompt tokens are masked out of the loss, answers + EOS are learned."""

    def __init__(self, tokenizer, mix: dict[str, float], batch_size: int, seed: int) -> None:
        self.tok, self.mix, self.batch_size = tokenizer, mix, batch_size
        self.rng = random.Random(seed)
        self.excluded = held_out_pairs()

    def question(self):
        op = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        while True:
            q = sample_question(op, self.rng)
            if (q.op, q.a, q.b) not in self.excluded:
                return q

    def __next__(self) -> dict[str, torch.Tensor]:
        rows, labels = [], []
        for _ in range(self.batch_size):
            q = self.question()
            prompt = self.tok(q.prompt)["input_ids"]
            full = self.tok(q.text)["input_ids"] + [self.tok.eos_token_id]
            rows.append(full)
            labels.append([-100] * len(prompt) + full[len(prompt) :])
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tok.pad_token_id)
        lab = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, y) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)], lab[i, : len(y)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(y), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def train(model, batches: Batches, steps: int, lr: float, desc: str):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    )
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=desc, mininterval=2.0)
    for _ in bar:
        loss = model(**next(batches)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    return model.eval()


def save_and_measure(model, tokenizer, out: Path, name: str, card: dict) -> dict[str, float]:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(d)
    model.generation_config.save_pretrained(d)
    tokenizer.save_pretrained(d)
    m, t = load_model_and_tokenizer(d, dtype="float32")
    result = zoo.evaluate(zoo.hf_generate_fn(m, t), batch_size=100)
    acc = {k: round(v, 4) for k, v in result.row().items()}
    card = {**card, "accuracy": acc, "parameters": sum(p.numel() for p in m.parameters())}
    (d / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    table = "\n".join(f"| {k} | {v:.2f} |" for k, v in acc.items())
    (d / "README.md").write_text(
        f"# zoo/{name}\n\n{card['description']}\n\n"
        f"- architecture: LlamaForCausalLM, {card['parameters']:,} parameters, fp16 weights\n"
        f"- tokenizer: {card['tokenizer']}\n- data: {card['data']}\n"
        f"- steps: {card['steps']} (batch {card['batch_size']}, lr {card['lr']}), seed {card['seed']}\n"
        f"- held-out accuracy (`lmfuse.zoo.evaluate`, greedy, {result.n} questions):\n\n"
        f"| op | accuracy |\n|---|---|\n{table}\n\nMade by `scripts/train_zoo.py`.\n"
    )
    print(f"{name}: {acc}", flush=True)
    return acc


def write_zoo_readme(out: Path) -> None:
    """Write the zoo's README with the accuracy table read from each model's training.json."""
    rows = []
    for name in zoo.MEMBERS:
        card_path = out / name / "training.json"
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        acc = card["accuracy"]
        cells = " | ".join(f"{acc[k]:.2f}" for k in ("all", *OPS))
        rows.append(f"| {name} | {cells} |")
        rows_desc = f"- `{name}`: {card['description']} {card['steps']} steps; {card['tokenizer']}."
        rows.append(rows_desc)
    table = [r for r in rows if r.startswith("|")]
    desc = [r for r in rows if r.startswith("-")]
    text = (
        "# The zoo\n\n"
        "Tiny Llama-architecture models (about 0.86M parameters each, fp16) trained here on synthetic "
        "arithmetic by `scripts/train_zoo.py` (fixed seeds; about 15 minutes on 2 cores). Every method and "
        "`lmfuse demo` use them.\n\n"
        "Task: `Q: 37+48= A: 85`: addition and subtraction over 0-99 (non-negative results), "
        "multiplication of 0-99 by 0-9. The held-out set (`lmfuse.zoo.eval_set()`, 100 questions per "
        "operation, fixed seed) is excluded from all training data.\n\n"
        + "\n".join(desc)
        + "\n\nHeld-out accuracy, greedy decoding, measured on the committed fp16 weights with "
        "`lmfuse.zoo.evaluate` (a test checks that this table matches):\n\n"
        "| model | all | add | sub | mul |\n|---|---|---|---|---|\n" + "\n".join(table) + "\n\n"
        "Reproduce: `.venv/bin/python scripts/train_zoo.py` (or `--only add` to retrain one specialist "
        "from the committed base).\n"
    )
    (out.parent / "README.md").write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("src/lmfuse/zoo/models"))
    ap.add_argument("--base-steps", type=int, default=800)
    ap.add_argument("--specialist-steps", type=int, default=None, help="default: SPECIALIST_STEPS")
    ap.add_argument("--generalist-steps", type=int, default=900)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy machine)")
    ap.add_argument("--only", nargs="*", default=None, help="train only these members (base first)")
    ap.add_argument("--quick", action="store_true", help="a few steps into /tmp/zoo-quick")
    args = ap.parse_args()
    if args.quick:
        args.out, args.base_steps, args.specialist_steps, args.generalist_steps = (
            Path("/tmp/zoo-quick"),
            20,
            10,
            20,
        )
    torch.set_num_threads(args.threads)
    start = time.time()
    char = testing.char_tokenizer()
    only = set(args.only or zoo.MEMBERS)
    common = {"batch_size": args.batch_size, "seed": 0}
    if "base" in only:
        torch.manual_seed(0)
        base = LlamaForCausalLM(model_config(len(char)))
        train(base, Batches(char, MIX_ALL, args.batch_size, seed=1), args.base_steps, 3e-3, "base")
        save_and_measure(base, char, args.out, "base", {
            **common, "description": "Base model: trained from scratch on all three operations.",
            "tokenizer": "character-level (lmfuse.testing.char_tokenizer)",
            "data": "add / sub / mul, one third each", "steps": args.base_steps, "lr": 3e-3,
        })  # fmt: skip
    for i, op in enumerate(zoo.SPECIALISTS):
        if op not in only:
            continue
        torch.manual_seed(10 + i)
        model, _ = load_model_and_tokenizer(args.out / "base", dtype="float32")
        for name, p in model.named_parameters():  # MLP-only fine-tune: experts differ in their FFNs
            p.requires_grad = ".mlp." in name
        mix = {o: (SPECIALIST_MIX if o == op else (1 - SPECIALIST_MIX) / 2) for o in OPS}
        steps = args.specialist_steps or SPECIALIST_STEPS[op]
        train(model, Batches(char, mix, args.batch_size, seed=10 + i), steps, 2e-3, op)
        save_and_measure(model, char, args.out, op, {
            **common, "description": f"Specialist: MLP-only fine-tune of zoo/base (attention, norms, embeddings frozen), "
            f"{SPECIALIST_MIX:.0%} on '{op}'.",
            "tokenizer": "character-level, same as zoo/base", "steps": steps, "lr": 2e-3,
            "data": f"{SPECIALIST_MIX:.0%} {op}, the rest split between the other two operations",
        })  # fmt: skip
    if "generalist" in only:
        bpe = testing.bpe_tokenizer(arithmetic_corpus(), vocab_size=BPE_VOCAB)
        torch.manual_seed(20)
        gen = LlamaForCausalLM(model_config(len(bpe)))
        train(gen, Batches(bpe, MIX_ALL, args.batch_size, seed=20), args.generalist_steps, 3e-3, "generalist")
        save_and_measure(gen, bpe, args.out, "generalist", {
            **common, "description": f"Generalist with a different tokenizer (byte-level BPE, {len(bpe)} tokens).",
            "tokenizer": "byte-level BPE trained on the arithmetic corpus (lmfuse.testing.bpe_tokenizer)",
            "data": "add / sub / mul, one third each", "steps": args.generalist_steps, "lr": 3e-3,
        })  # fmt: skip
    if not args.quick:
        write_zoo_readme(args.out)
    print(f"done in {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
