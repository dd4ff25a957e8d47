"""A training run's home while it runs: ``OUT`` itself, with ``train_log.jsonl`` and ``checkpoints/``.

Training writes its loss log and Trainer checkpoints straight into the output directory, marked in
progress (``.lmfuse-output`` with ``in_progress``), so an interrupted run keeps both and ``--resume``
continues from the last checkpoint (transformers' ``resume_from_checkpoint``). Only when training ends
is the finished model put in place, atomically, replacing the in-progress directory. A stop request (the
CLI's first Ctrl-C) saves a checkpoint at the end of the current step and stops.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path
from typing import Any

from lmfuse.core.atomic import check_output_dir, mark_in_progress, read_marker
from lmfuse.errors import CheckpointError, ConfigError

LOG_FILE = "train_log.jsonl"
CHECKPOINTS = "checkpoints"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request; the message says where the checkpoint is and how to resume."""


def check(out: Path, config: Any, overwrite: bool, resume: bool) -> str | None:
    """Whether training may write ``out`` (nothing is written); the checkpoint to resume from, if any."""
    marker = read_marker(out) if out.is_dir() else None
    in_progress = bool(marker and marker.get("in_progress"))
    if resume:
        return _resume_point(out, config, marker if in_progress else None)
    if in_progress and not overwrite:
        raise CheckpointError(
            f"{out} holds an interrupted training run; pass --resume to continue it, or --overwrite to "
            "start again"
        )
    check_output_dir(out, overwrite)  # refuses files lmfuse did not write, even with overwrite
    return None


def start(out: Path, config: Any, resume_from: str | None) -> None:
    """Make ``out`` an in-progress training directory (after ``check``)."""
    if resume_from is not None:
        mark_in_progress(out, [LOG_FILE], [CHECKPOINTS], config=dataclasses.asdict(config))
        return
    if out.exists():
        shutil.rmtree(out)  # only lmfuse's files (checked above); the user asked for --overwrite
    out.mkdir(parents=True)
    mark_in_progress(out, [LOG_FILE], [CHECKPOINTS], config=dataclasses.asdict(config))


def _resume_point(out: Path, config: Any, marker: dict | None) -> str:
    from transformers.trainer_utils import get_last_checkpoint

    if marker is None:
        raise ConfigError(f"--resume: {out} holds no interrupted training run to continue")
    saved = marker.get("config") or {}
    now = dataclasses.asdict(config)
    changed = [
        f"{k}: {saved.get(k)!r} then, {v!r} now" for k, v in now.items() if k != "steps" and saved.get(k) != v
    ]
    if changed:
        raise ConfigError([f"--resume with other settings than the interrupted run: {c}" for c in changed])
    folder = out / CHECKPOINTS
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        raise CheckpointError(
            f"--resume: {out} has no checkpoint yet (the run stopped before its first save); "
            "start again with --overwrite"
        )
    return last


def stop_callback(stop: threading.Event | None, stopped: list[int]):
    """A ``TrainerCallback``: when ``stop`` is set, save a checkpoint after this step and end training."""
    from transformers import TrainerCallback

    class StopOnRequest(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stop is not None and stop.is_set():
                control.should_save = True
                control.should_training_stop = True
                stopped.append(state.global_step)
            return control

    return StopOnRequest()


def interrupted(out: Path, step: int) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"stopped at step {step}; checkpoint and {LOG_FILE} kept in {out}: continue with the same command "
        "and --resume"
    )
