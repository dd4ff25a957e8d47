"""Resuming exchange/moa outputs never destroys user data, and failed calls are retried (issue 15, 2 and 3)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from lmfuse.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "exchange"
QUESTIONS = EXAMPLES / "questions.jsonl"
EOT = ["exchange", "--config", str(EXAMPLES / "eot_scripted.yaml"), "--no-progress"]


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def test_a_notes_file_as_output_is_refused_and_left_alone(tmp_path, capsys):
    for text in ("my notes\n", "my notes", '{"id": 1}\n'):
        notes = tmp_path / "n.txt"
        notes.write_text(text)
        assert main([*EOT, "--input", str(QUESTIONS), "-o", str(notes)]) == 2
        assert "not an lmfuse exchange/moa result line" in capsys.readouterr().err
        assert _files(tmp_path) == {"n.txt": text.encode()}  # not truncated, no recipe beside it


def test_a_torn_last_line_is_still_dropped_and_redone(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main([*EOT, "--input", str(QUESTIONS), "-o", str(out)]) == 0
    full = out.read_text().splitlines()
    out.write_text("\n".join(full[:2]) + "\n" + full[2][:30])  # killed mid-write of the third line
    assert main([*EOT, "--input", str(QUESTIONS), "-o", str(out)]) == 0
    assert "answered 1 of 3 (2 already in" in capsys.readouterr().out
    assert sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) == ["q1", "q2", "q3"]


def test_output_naming_an_input_or_the_transcript_is_refused(tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_bytes(QUESTIONS.read_bytes())
    assert main([*EOT, "--input", str(q), "-o", str(q)]) == 2
    assert "is also an input" in capsys.readouterr().err
    out = tmp_path / "r.jsonl"
    assert main([*EOT, "--input", str(q), "-o", str(out), "--transcript", str(out)]) == 2
    assert "is the -o file" in capsys.readouterr().err
    assert _files(tmp_path) == {"q.jsonl": QUESTIONS.read_bytes()}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_calls_to_a_down_server_are_not_stored_as_answered(tmp_path, capsys):
    config = tmp_path / "eot.yaml"
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    config.write_text(
        f"backends:\n  local: {{kind: openai, base_url: '{url}', timeout: 5, max_retries: 0}}\n"
        "agents:\n  - {name: a, backend: local, model: m}\n  - {name: b, backend: local, model: m}\n"
        "max_rounds: 1\n"
    )
    out = tmp_path / "r.jsonl"
    cmd = ["exchange", "--config", str(config), "--input", str(QUESTIONS), "-o", str(out), "--no-progress"]
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "calls failed after retries in 3 questions" in err and "re-run the same command" in err
    assert all(json.loads(x)["failures"] for x in out.read_text().splitlines())
    assert main(cmd) == 1  # the re-run retries all three, it does not report them "already in"
    captured = capsys.readouterr()
    assert "answered 3 of 3 (0 already in" in captured.out and "calls 6," in captured.out
    assert len(out.read_text().splitlines()) == 3
