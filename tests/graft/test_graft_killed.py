"""A graft killed mid-write (SIGKILL or Ctrl-C) leaves no output that looks complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import sys, time
from pathlib import Path
import lmfuse.core.export as ex
from lmfuse.graft import dus_recipe
from lmfuse.graft.write import graft

out = Path(sys.argv[2])

def stall():
    # once two shards are on disk the run stalls, so the signal always lands mid-write (never after
    # the run has finished, however fast the machine)
    shards = list(out.parent.glob(f".{out.name}.partial-*/*.safetensors"))
    time.sleep(600 if len(shards) >= 2 else 0.01)

slow_copy, slow_write = ex._copy_range, ex._write_loaded
ex._copy_range = lambda *a: (stall(), slow_copy(*a))[1]
ex._write_loaded = lambda *a: (stall(), slow_write(*a))[1]
graft(dus_recipe(sys.argv[1], 4, 1), sys.argv[2], max_shard_bytes=20_000)
"""


def _start(tiny4: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tiny4), str(out)], env=env, stderr=subprocess.PIPE
    )


def _wait_for_shards(parent: Path, name: str, proc: subprocess.Popen, n: int = 2) -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for partial in parent.glob(f".{name}.partial-*"):
            if len(list(partial.glob("*.safetensors"))) >= n:
                return partial
        if proc.poll() is not None:
            pytest.fail(f"graft ended before it could be interrupted: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("graft never started writing")


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_complete_looking_output(tiny4, tmp_path):
    out = tmp_path / "dus"
    proc = _start(tiny4, out)
    partial = _wait_for_shards(tmp_path, "dus", proc)
    assert proc.poll() is None, "the graft must still be writing when it is killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not out.exists()  # the half-written files sit only in a hidden ".dus.partial-*" directory
    assert partial.name.startswith(".dus.partial-")


@pytest.mark.slow
def test_ctrl_c_mid_write_removes_the_partial_output(tiny4, tmp_path):
    out = tmp_path / "dus"
    proc = _start(tiny4, out)
    _wait_for_shards(tmp_path, "dus", proc)
    assert proc.poll() is None, "the graft must still be writing when it is interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) != 0
    assert not out.exists()
    assert not list(tmp_path.glob(".dus.*"))
