"""Continued pre-training: a thin wrapper over transformers' ``Trainer`` for causal-LM text.

It only reads the data (``.txt``: one example per line; ``.jsonl``: one object per line with a text
field, or ``prompt`` and ``completion`` fields: the completion alone is learned), tokenizes it (each example ends with EOS; ``packing`` concatenates into full blocks), and hands
everything else to ``Trainer``, so accelerate, FSDP and DeepSpeed launchers work unchanged. The loss is
logged to ``OUT/train_log.jsonl`` while training runs, next to the checkpoints, and an interrupted run
resumes (``graft/train_state.py``); the finished model is put in place atomically at the end.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmfuse.core.atomic import atomic_output_dir, output_lock
from lmfuse.core.config import dump_yaml
from lmfuse.core.export import PROVENANCE_FILE, provenance
from lmfuse.core.jsonl import read_text, readable_file
from lmfuse.errors import ConfigError, InputDataError
from lmfuse.graft import train_state
from lmfuse.graft.train_state import CHECKPOINTS, LOG_FILE


@dataclass
class TrainConfig:
    """Training settings (the rest of ``TrainingArguments`` keeps transformers' defaults)."""

    steps: int
    lr: float = 1e-4
    batch_size: int = 8
    seq_len: int = 512
    packing: bool = False
    text_field: str = "text"
    warmup_steps: int = 0
    seed: int = 0
    log_every: int = 10
    save_every: int = 0
    """Save a Trainer checkpoint every N steps (0: only when stopped); ``resume`` continues from it."""
    gradient_accumulation_steps: int = 1
    dtype: str = "float32"
    """Weights dtype when the model is loaded from a path (master weights: keep float32)."""
    bf16: bool = False
    """bfloat16 mixed precision (Trainer's ``bf16``), for accelerators that support it."""

    def validate(self) -> list[str]:
        problems = []
        for name in ("steps", "batch_size", "seq_len", "log_every", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected a positive integer, found {getattr(self, name)}")
        if self.lr <= 0:
            problems.append(f"lr: expected a positive number, found {self.lr}")
        if self.save_every < 0:
            problems.append(f"save_every: expected >= 0, found {self.save_every}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps: expected >= 0, found {self.warmup_steps}")
        return problems


@dataclass
class TrainResult:
    out: Path
    steps: int
    examples: int
    losses: list[tuple[int, float]]
    """``(step, loss)`` as logged."""
    log_file: Path

    @property
    def first_loss(self) -> float:
        return self.losses[0][1] if self.losses else float("nan")

    @property
    def last_loss(self) -> float:
        return self.losses[-1][1] if self.losses else float("nan")


Text = str | tuple[str, str]
"""An example: a text, or ``(prompt, completion)`` of which only the completion is learned."""


def read_texts(files: list[str | Path], text_field: str = "text") -> list[Text]:
    """Examples from ``.txt`` (one per non-empty line) and ``.jsonl`` files (``text_field``, or ``prompt``
    and ``completion``); bad records name file:line."""
    texts: list[Text] = []
    for f in map(Path, files):
        if not readable_file(f):
            raise InputDataError(f"data file not found: {f}")
        for i, line in enumerate(read_text(f, "data file").splitlines(), 1):
            if not line.strip():
                continue
            if f.suffix != ".jsonl":
                texts.append(line)
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InputDataError(f"{f}:{i}: not valid JSON ({exc})") from None
            texts.append(_record_text(record, text_field, f"{f}:{i}"))
    if not texts:
        raise InputDataError(f"no examples in {', '.join(map(str, files))}")
    return texts


def _record_text(record: object, text_field: str, where: str) -> Text:
    if isinstance(record, dict) and isinstance(record.get(text_field), str):
        return record[text_field]
    if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("prompt", "completion")):
        return record["prompt"], record["completion"]
    raise InputDataError(
        f"{where}: expected an object with a string field {text_field!r} (or 'prompt' and 'completion')"
    )


Example = tuple[list[int], int]
"""Token ids and how many leading ones are a prompt (not learned)."""


def tokenize(texts: list[Text], tokenizer, seq_len: int, packing: bool) -> list[Example]:
    """Token ids per example, each ending with EOS, with its prompt length (0 for a text); with
    ``packing``, full ``seq_len`` blocks."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if packing and any(isinstance(t, tuple) for t in texts):
        raise ConfigError("packing: prompt + completion records cannot be packed; drop --packing")
    examples = [_ids(t, tokenizer, eos) for t in texts]
    if not packing:
        return [(x[:seq_len], min(n, seq_len)) for x, n in examples]
    flat = [t for x, _ in examples for t in x]
    blocks = [(flat[i : i + seq_len], 0) for i in range(0, len(flat) - seq_len + 1, seq_len)]
    if not blocks:
        raise InputDataError(f"packing needs at least {seq_len} tokens, the data has {len(flat)}")
    return blocks


def _ids(text: Text, tokenizer, eos: list[int]) -> Example:
    if isinstance(text, str):
        return tokenizer(text)["input_ids"] + eos, 0
    prompt, completion = text
    return tokenizer(prompt + completion)["input_ids"] + eos, len(tokenizer(prompt)["input_ids"])


class PadCollator:
    """Right-pad a batch; labels are the inputs with padding and prompt tokens masked (-100). Shapes
    ``(batch, seq)``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[Example]) -> dict[str, torch.Tensor]:
        width = max(len(x) for x, _ in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        learned = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (x, prompt_len) in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
            learned[i, prompt_len : len(x)] = True
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(~learned, -100)}


def _loss_logger(path: Path, losses: list[tuple[int, float]]):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))
                row = {
                    "step": state.global_step,
                    **{k: v for k, v in logs.items() if isinstance(v, int | float)},
                }
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")

    return LossLog()


def train(
    model: Any,
    data: list[str | Path],
    out: str | Path,
    config: TrainConfig,
    tokenizer: Any = None,
    overwrite: bool = False,
    progress: bool = False,
    resume: bool = False,
    stop: threading.Event | None = None,
    method: str = "train",
    finish: Callable[[Any, Path], None] | None = None,
) -> TrainResult:
    """Train ``model`` (a path / ``zoo:NAME``, or a loaded model with ``tokenizer``) and save it to ``out``.

    While training, ``out`` holds ``train_log.jsonl`` and ``checkpoints/``; ``resume`` continues an
    interrupted run from its last checkpoint. Setting ``stop`` saves a checkpoint and raises
    ``TrainingInterrupted``. ``method`` names the command in the saved settings and provenance;
    ``finish(model, directory)`` runs just before the model is saved into the output being written."""
    from lmfuse.core.loading import load_model, load_tokenizer

    problems = config.validate()
    if isinstance(model, str | Path) and tokenizer is None:
        tokenizer = load_tokenizer(model)
    if tokenizer is None:
        problems.append("tokenizer: required when a loaded model is passed")
    if problems:
        raise ConfigError(problems, source="train")
    out = Path(out)
    with output_lock(out):  # checked before the data, the model and the hours: nothing written yet
        resume_from = train_state.check(out, config, overwrite, resume)
        examples = tokenize(read_texts(data, config.text_field), tokenizer, config.seq_len, config.packing)
        source = str(model) if isinstance(model, str | Path) else getattr(model, "name_or_path", "in-memory")
        if isinstance(model, str | Path):
            model = load_model(model, dtype=config.dtype, device="cpu")
        train_state.start(out, config, resume_from)
        losses: list[tuple[int, float]] = []
        trainer = _trainer(model, tokenizer, examples, out, config, progress, losses)
        stopped: list[int] = []
        trainer.add_callback(train_state.stop_callback(stop, stopped))
        trainer.train(resume_from_checkpoint=resume_from)
        if stopped:
            raise train_state.interrupted(out, stopped[0])
        model.eval()
        with atomic_output_dir(out, overwrite=True) as tmp:  # replaces the in-progress directory
            if finish is not None:
                finish(model, tmp)
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            shutil.copy2(out / LOG_FILE, tmp / LOG_FILE)
            (tmp / f"lmfuse_{method.replace(' ', '_')}.yaml").write_text(dump_yaml(config))
            record = provenance({"model": source, "data": [str(d) for d in data]}, method=method)
            (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return TrainResult(out, config.steps, len(examples), losses, out / LOG_FILE)


def _trainer(model, tokenizer, examples, out: Path, config: TrainConfig, progress: bool, losses):
    from transformers import PrinterCallback, ProgressCallback, Trainer, TrainingArguments

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    save = {"save_strategy": "steps", "save_steps": config.save_every} if config.save_every else {}
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINTS), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.lr,
        warmup_steps=config.warmup_steps, logging_steps=config.log_every, logging_first_step=True,
        **({"save_strategy": "no"} | save), save_total_limit=1, report_to="none", seed=config.seed,
        disable_tqdm=not progress, remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(), bf16=config.bf16,
    )  # fmt: skip
    model.train()
    trainer = Trainer(
        model=model, args=args, train_dataset=examples, data_collator=PadCollator(pad),
        callbacks=[_loss_logger(out / LOG_FILE, losses)],
    )  # fmt: skip
    if not progress:  # without a bar Trainer prints every log dict; the JSONL log has them
        trainer.remove_callback(PrinterCallback)
    else:  # the bar's own log lines are dicts of formatted strings ({'loss': '2.345'}): print numbers
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_progress_with_loss_lines())
    return trainer


def _progress_with_loss_lines():
    from transformers import ProgressCallback

    class LossLines(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                lr = logs.get("learning_rate")
                extra = f", lr {lr:.3g}" if isinstance(lr, int | float) else ""
                self.training_bar.write(f"step {state.global_step}: loss {float(logs['loss']):.4f}{extra}")

    return LossLines()
