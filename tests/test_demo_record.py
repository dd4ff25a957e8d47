"""A recorded demo run: the JSON round trip, the README block, and ``lmfuse demo --record``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lmfuse.cli import main
from lmfuse.demo import DemoRow
from lmfuse.demo_record import (
    find_block,
    format_table,
    make_record,
    read_record,
    readme_block,
    replace_block,
    write_record,
)
from lmfuse.errors import InputDataError

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    DemoRow("base", {"all": 0.5, "add": 1.0, "sub": 0.5, "mul": 0.0}, 0.25, kind="member"),
    DemoRow("vote", {"all": 0.75, "add": 1.0, "sub": 0.5, "mul": 0.75}, 1.5, note="n", fuses=("base",),
            files={"loss curve": "/tmp/somewhere/x.png"}),
    DemoRow("same budget", {"all": 0.5, "add": 0.5, "sub": 0.5, "mul": 0.5}, 0.0, kind="baseline"),
]  # fmt: skip


def test_record_round_trip(tmp_path):
    record = make_record(ROWS, per_op=2, threads=1, methods=None, seconds=3.04)
    _, rows = read_record(write_record(tmp_path / "r.json", record))
    assert [r.files for r in rows] == [{}, {"loss curve": "x.png"}, {}]  # names only: paths vary
    assert [(r.name, r.kind, r.accuracy, r.note, r.fuses) for r in rows] == [
        (r.name, r.kind, r.accuracy, r.note, r.fuses) for r in ROWS
    ]
    assert record["table"] == format_table(rows)
    lines = record["table"].splitlines()
    assert lines[1].startswith("base ") and lines[2].startswith("* vote") and lines[3].startswith("- same")


def test_bad_records_are_refused(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"version": 99, "rows": []}))
    (tmp_path / "c.json").write_text("[]")
    (tmp_path / "d.json").write_text(json.dumps({"version": 1}))
    (tmp_path / "e.json").write_text(json.dumps({"version": 1, "rows": [{"name": "x"}]}))
    cases = [("a", "expected a JSON file"), ("b", "found 99"), ("c", "found 'list'"),
             ("d", "expected a list of rows"), ("e", "row 0: expected")]  # fmt: skip
    for name, says in cases:
        with pytest.raises(InputDataError, match=says):
            read_record(tmp_path / f"{name}.json")


def test_readme_block_is_replaced_in_place():
    record = make_record(ROWS, per_op=2, threads=1, methods=["vote"], seconds=3.0)
    block = readme_block(record, "r.json")
    text = f"# T\nbefore\n{readme_block(make_record(ROWS[:1], 2, 1, None, 1.0), 'r.json')}\nafter\n"
    new = replace_block(text, block)
    assert new.startswith("# T\nbefore\n") and new.endswith("\nafter\n")
    span = find_block(new)
    assert new[span[0] : span[1]] == block and record["table"] in block and "methods vote" in block
    with pytest.raises(InputDataError, match="expected a block"):
        replace_block("no block here", block)


def test_demo_record_writes_what_it_prints(tmp_path, capsys):
    out = tmp_path / "rec.json"
    assert main(["demo", "--per-op", "1", "--only", "--record", str(out)]) == 0
    printed = capsys.readouterr().out
    record, rows = read_record(out)
    assert record["table"] in printed and record["per_op"] == 1 and record["threads"] == 1
    assert [r.kind for r in rows] == ["member"] * len(rows) and record["methods"] == []
    before = out.read_bytes()  # an existing record is replaced only with --overwrite, checked before the run
    assert main(["demo", "--per-op", "1", "--only", "--record", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["demo", "--per-op", "1", "--only", "--record", str(out), "--overwrite"]) == 0


def test_demo_readme_script_regenerates_the_block(tmp_path):
    spec = importlib.util.spec_from_file_location("demo_readme", ROOT / "scripts" / "demo_readme.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rec = write_record(tmp_path / "bench" / "rec.json", make_record(ROWS, 2, 1, None, 3.0))
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{readme_block(make_record(ROWS[:1], 2, 1, None, 1.0), 'old')}\ny\n")
    assert script.main([str(rec), str(readme)]) == 0
    text = readme.read_text()
    assert readme_block(read_record(rec)[0], "bench/rec.json") in text and text.startswith("x\n")


def test_bad_threads_exit_2(capsys):
    assert main(["demo", "--threads", "0", "--only"]) == 2
    assert "--threads: expected a positive integer, found 0" in capsys.readouterr().err
