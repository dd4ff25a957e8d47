import pytest

from lmfuse.core.jsonl import BadRecord, describe, read_records
from lmfuse.errors import InputDataError


def _parse(record, line):
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise BadRecord(f'expected an object with a string "prompt", found {describe(record)}')
    return (line, record["prompt"])


def test_reads_records_with_their_line_numbers_skipping_blank_lines(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "a"}\n\n{"prompt": "b", "x": 1}\n')
    assert read_records(f, _parse, "prompt record") == [(1, "a"), (3, "b")]


def test_every_bad_line_is_reported_at_once(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text('{"prompt": "a"}\n{oops\n[1, 2]\n{"text": "t"}\n')
    with pytest.raises(InputDataError) as info:
        read_records(f, _parse, "prompt record")
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{f}:2:2: not valid JSON") and lines[0].endswith("expected a prompt record")
    assert lines[1] == f'{f}:3: expected an object with a string "prompt", found a list'
    assert lines[2] == f"{f}:4: expected an object with a string \"prompt\", found keys ['text']"


def test_long_reports_are_capped_with_a_count(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text("nope\n" * 25)
    with pytest.raises(InputDataError, match=r"\.\.\. and 5 more$"):
        read_records(f, _parse, "prompt record")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputDataError, match="no such file; expected a JSONL file of prompt records"):
        read_records(tmp_path / "missing.jsonl", _parse, "prompt record")
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(InputDataError, match="expected at least one prompt record, found none"):
        read_records(tmp_path / "empty.jsonl", _parse, "prompt record")


def test_a_pipe_is_read_like_a_file(tmp_path, capsys):
    """``lmfuse vote <(...)``: bash passes a pipe (/dev/fd/N); it is accepted, not "no such file"."""
    import os
    import threading

    from lmfuse.cli import main

    for argv_of in (
        lambda p: ["vote", str(p), "-o", str(tmp_path / "o.jsonl"), "--no-progress"],
        lambda p: ["moe", "inspect", "zoo:base", "--data", str(p)],  # reaches the model check: data was read
    ):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        writer = threading.Thread(
            target=fifo.write_text, args=('{"id": 1, "candidates": ["a", "a", "b"]}\n',)
        )
        writer.start()
        code = main(argv_of(fifo))
        writer.join(10)
        fifo.unlink()
        err = capsys.readouterr().err
        assert "no such" not in err
        if code == 0:
            assert (tmp_path / "o.jsonl").read_text().startswith('{"id": 1')
        else:
            assert "has no mixture-of-experts blocks" in err, err
