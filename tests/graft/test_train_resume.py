"""``lmfuse train`` stopped by Ctrl-C keeps its checkpoint and log in OUT and resumes (issue 15, item 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from transformers import AutoModelForCausalLM

from lmfuse.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _data(tmp: Path) -> Path:
    p = tmp / "d.txt"
    p.write_text("".join(f"Q: {i}+{i}= A: {2 * i}\n" for i in range(40)))
    return p


def test_ctrl_c_keeps_checkpoint_and_log_then_resume_finishes(tmp_path, capsys):
    out = tmp_path / "t"
    common = ["zoo:base", "--data", str(_data(tmp_path)), "--seq-len", "16", "--batch-size", "4",
              "--log-every", "1", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmfuse", "train", *common, "--steps", "100000"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # the log is in OUT while it runs
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    step = int(err.split("stopped at step ")[1].split(";")[0])
    assert (out / "checkpoints" / f"checkpoint-{step}").is_dir()
    logged = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert logged and max(logged) <= step
    assert not (out / "config.json").exists()  # nothing that looks like a finished model

    assert main(["train", *common, "--steps", str(step + 2)]) == 2  # neither --resume nor --overwrite
    assert "interrupted training run" in capsys.readouterr().err
    assert main(["train", *common, "--steps", str(step + 2), "--lr", "1"]) == 2  # other settings: refused
    assert main(["train", *common, "--steps", str(step + 2), "--resume"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps[: len(logged)] == logged and steps[-1] == step + 2  # one log, continued
    assert not (out / "checkpoints").exists()
    assert main(["train", *common, "--steps", "1", "--resume"]) == 2  # a finished model: nothing to resume
