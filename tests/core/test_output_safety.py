"""Outputs: dead runs' partials cleaned, --overwrite spares user files, permissions follow the umask
(issue 15, items 8, 9, 19)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from lmfuse.cli import main
from lmfuse.core.atomic import atomic_open, atomic_output_dir, clean_stale


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partials_of_dead_runs_are_removed_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "g"
    dead = tmp_path / f".g.partial-{_dead_pid()}-abc"
    dead.mkdir()
    (dead / "model-00001.safetensors").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".g.old-{_dead_pid()}-x"
    stale_file.mkdir()
    live = tmp_path / f".g.partial-{os.getppid()}-abc"  # a live process's partial is not ours to remove
    live.mkdir()
    assert main(["graft", "dus", "zoo:base", str(out), "--drop", "1"]) == 0
    assert not dead.exists() and not stale_file.exists() and live.exists()
    assert (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "g"]


def test_clean_stale_ignores_other_outputs_and_unstamped_names(tmp_path):
    for name in (f".other.partial-{_dead_pid()}-a", ".g.partial-abcdef", "g.partial-1-a"):
        (tmp_path / name).mkdir()
    assert clean_stale(tmp_path / "g") == []
    assert len(list(tmp_path.iterdir())) == 3


def test_overwrite_refuses_a_directory_holding_user_files(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["graft", "dus", "zoo:base", str(out), "--drop", "1"]
    assert main(argv) == 0
    assert main([*argv, "--overwrite"]) == 0  # only lmfuse's files: replaced
    (out / "my-notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 2
    assert "holds files lmfuse did not write (my-notes.txt)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    assert main(["train", "zoo:base", "--data", str(user / "thesis.tex"), "--steps", "1",
                 "--out", str(user), "--overwrite"]) == 2  # fmt: skip
    assert (user / "thesis.tex").read_text() == "years of work"


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    f = tmp_path / "o.jsonl"
    with atomic_open(f) as fh:
        fh.write("x\n")
    assert _mode(f) == 0o666 & ~mask
    with atomic_output_dir(tmp_path / "d") as tmp:
        (tmp / "a.txt").write_text("a")
    assert _mode(tmp_path / "d") == 0o777 & ~mask
    assert main(["graft", "dus", "zoo:base", str(tmp_path / "g"), "--drop", "1"]) == 0
    assert _mode(tmp_path / "g") == 0o777 & ~mask
    assert {_mode(p) for p in (tmp_path / "g").iterdir()} == {0o666 & ~mask}


def test_overwrite_keeps_the_mode_of_the_replaced_file(tmp_path, umask):
    umask(0o077)
    f = tmp_path / "o.jsonl"
    f.write_text("old\n")
    f.chmod(0o644)
    with atomic_open(f, overwrite=True) as fh:
        fh.write("new\n")
    assert f.read_text() == "new\n" and _mode(f) == 0o644
