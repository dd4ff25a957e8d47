"""Every command under bad input and faults: exit 1 or 2, one clear line on stderr, no traceback, no
partial output, every file that was there before byte-for-byte unchanged (issue 15).

Each case builds its inputs in a fresh folder and returns the argv; the run is in-process (``main``)
unless the fault needs a process of its own (a file-size limit, another process holding the output).
A full disk is stood in for by ``RLIMIT_FSIZE`` (the write fails with EFBIG, as ENOSPC would), since
mounting a tiny tmpfs needs privileges a test must not assume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmfuse.cli import main
from lmfuse.zoo import path as zoo_path

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
BAD = b'{"id": 1, "candidates": ["caf\xe9", "x"]}\n'


# ---------------------------------------------------------------- inputs the cases share


def _model_copy(tmp: Path, name: str = "base") -> Path:
    dst = tmp / f"m-{name}"
    shutil.copytree(zoo_path(name), dst)
    return dst


def _truncated(tmp: Path) -> Path:
    m = _model_copy(tmp)
    w = m / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    return m


def _empty_weights(tmp: Path) -> Path:
    m = _model_copy(tmp)
    (m / "model.safetensors").write_bytes(b"")
    return m


def _garbage_weights(tmp: Path) -> Path:
    m = _model_copy(tmp)
    (m / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{notjson" + b"\0" * 64)
    return m


def _prompts(tmp: Path) -> Path:
    p = tmp / "p.jsonl"
    p.write_text('{"prompt": "Q: 1+2= A:"}\n')
    return p


def _text(tmp: Path) -> Path:
    p = tmp / "d.txt"
    p.write_text("Q: 1+2= A: 3\n")
    return p


def _votes(tmp: Path) -> Path:
    p = tmp / "v.jsonl"
    p.write_text('{"id": 1, "candidates": ["a", "a", "b"]}\n')
    return p


def _questions(tmp: Path) -> Path:
    return Path(shutil.copy(EX / "exchange" / "questions.jsonl", tmp / "q.jsonl"))


def _eot(tmp: Path) -> Path:
    return Path(shutil.copy(EX / "exchange" / "eot_scripted.yaml", tmp / "eot.yaml"))


def _moe_recipe(tmp: Path, base: str = "zoo:base") -> Path:
    p = tmp / "moe.yaml"
    p.write_text(
        f"base: {base}\nexperts:\n  - source: zoo:add\n    positive_prompts: ['Q: 1+2= A:']\n"
        "  - source: zoo:sub\n    positive_prompts: ['Q: 3-1= A:']\nnum_experts_per_tok: 1\n"
    )
    return p


def _bad_file(tmp: Path, name: str, data: bytes = BAD) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def _a_file(tmp: Path) -> Path:
    f = tmp / "afile"
    f.write_text("precious\n")
    return f


def _a_dir(tmp: Path) -> Path:
    d = tmp / "adir"
    d.mkdir()
    (d / "keep.txt").write_text("mine\n")
    return d


ENS = ["ensemble", "--model", "zoo:base", "--model", "zoo:add", "--max-new-tokens", "2"]
EXCH = ["exchange", "--no-progress"]

# ---------------------------------------------------------------- the cases: name -> tmp -> argv

CASES = {
    # non-UTF-8 input
    "vote/non-utf8": lambda t: ["vote", str(_bad_file(t, "l.jsonl")), "-o", str(t / "o.jsonl")],
    "ensemble/non-utf8": lambda t: [
        *ENS, "--input", str(_bad_file(t, "p.jsonl", b'{"prompt": "caf\xe9"}\n')), "-o", str(t / "o.jsonl"),
    ],
    "train/non-utf8": lambda t: [
        "train", "zoo:base", "--data", str(_bad_file(t, "d.txt", b"ok\ncaf\xe9\n")),
        "--steps", "1", "--out", str(t / "out"),
    ],
    "moe-train-router/non-utf8": lambda t: [
        "moe", "train-router", "zoo:base", "--data", str(_bad_file(t, "d.txt", b"caf\xe9\n")),
        "--out", str(t / "out"),
    ],
    "exchange/non-utf8-input": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--input", str(_bad_file(t, "q.jsonl", b'{"question": "\xff"}\n')),
        "-o", str(t / "r.jsonl"),
    ],
    "exchange/non-utf8-recipe": lambda t: [
        *EXCH, "--config", str(_bad_file(t, "r.yaml", b"max_rounds: 3 # caf\xe9\n")),
        "--input", str(_questions(t)), "-o", str(t / "r.jsonl"),
    ],
    "exchange/non-utf8-resume-file": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--input", str(_questions(t)),
        "-o", str(_bad_file(t, "r.jsonl", b'{"id": "q1", "x": "\xff"}\n')),
    ],
    "graft/non-utf8-recipe": lambda t: [
        "graft", "run", str(_bad_file(t, "g.yaml", b"slices: [] # \xe9\n")), str(t / "out"),
    ],
    "moe-build/non-utf8-recipe": lambda t: [
        "moe", "build", str(_bad_file(t, "m.yaml", b"base: zoo:base # \xe9\n")), str(t / "out"),
    ],
    # the output's parent is a file
    "vote/parent-is-file": lambda t: ["vote", str(_votes(t)), "-o", str(_a_file(t) / "o.jsonl")],
    "ensemble/parent-is-file": lambda t: [
        *ENS, "--input", str(_prompts(t)), "-o", str(_a_file(t) / "o.jsonl"),
    ],
    "graft/parent-is-file": lambda t: ["graft", "dus", "zoo:base", str(_a_file(t) / "o"), "--drop", "1"],
    "train/parent-is-file": lambda t: [
        "train", "zoo:base", "--data", str(_text(t)), "--steps", "1", "--out", str(_a_file(t) / "o"),
    ],
    "moe-build/parent-is-file": lambda t: ["moe", "build", str(_moe_recipe(t)), str(_a_file(t) / "o")],
    "exchange/parent-is-file": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--input", str(_questions(t)), "-o", str(_a_file(t) / "r.jsonl"),
    ],
    # -o is a directory
    "vote/output-is-dir": lambda t: ["vote", str(_votes(t)), "-o", str(_a_dir(t)), "--overwrite"],
    "ensemble/output-is-dir": lambda t: [*ENS, "--input", str(_prompts(t)), "-o", str(_a_dir(t))],
    "exchange/output-is-dir": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--input", str(_questions(t)), "-o", str(_a_dir(t)),
    ],
    # an existing output without --overwrite, and -o naming the input
    "ensemble/existing-output": lambda t: [*ENS, "--input", str(_prompts(t)), "-o", str(_a_file(t))],
    "ensemble/output-is-input": lambda t: [*ENS, "--input", str(_prompts(t)), "-o", str(t / "p.jsonl")],
    # corrupt weights
    "ensemble/truncated-weights": lambda t: [
        "ensemble", "--model", str(_truncated(t)), "--prompt", "hi", "--max-new-tokens", "1",
    ],
    "ensemble/empty-weights": lambda t: [
        "ensemble", "--model", str(_empty_weights(t)), "--prompt", "hi", "--max-new-tokens", "1",
    ],
    "graft/truncated-weights": lambda t: ["graft", "dus", str(_truncated(t)), str(t / "o"), "--drop", "1"],
    "graft/garbage-weights": lambda t: ["graft", "dus", str(_garbage_weights(t)), str(t / "o"), "--drop", "1"],
    "train/truncated-weights": lambda t: [
        "train", str(_truncated(t)), "--data", str(_text(t)), "--steps", "1", "--out", str(t / "o"),
    ],
    "moe-build/truncated-weights": lambda t: [
        "moe", "build", str(_moe_recipe(t, str(_truncated(t)))), str(t / "o"),
    ],
    "zoo-eval/truncated-weights": lambda t: ["zoo", "eval", str(_truncated(t)), "--per-op", "1"],
    # oversize input: refused against the model's context before any work (issue 15, item 14)
    "ensemble/oversize-prompt": lambda t: [
        *ENS, "--input", str(_bad_file(t, "p.jsonl", b'{"prompt": "' + b"1+" * 100_000 + b'"}\n')),
        "-o", str(t / "o.jsonl"),
    ],
    "ensemble/over-max-input-tokens": lambda t: [*ENS, "--prompt", "Q: 12+34= A:", "--max-input-tokens", "3"],
    "moe-train-router/oversize-example": lambda t: [
        "moe", "train-router", str(_tiny_moe()), "--data", str(_bad_file(t, "d.txt", b"1" * 5_000_000)),
        "--out", str(t / "o"),
    ],
    "moe-inspect/oversize-example": lambda t: [
        "moe", "inspect", str(_tiny_moe()), "--data", str(_bad_file(t, "d.txt", b"Q: 1+1= A: 2 " * 20)),
    ],
    # arguments this machine or command cannot honour, before any work (item 13, 18)
    "ensemble/device-cuda-without-gpu": lambda t: [*ENS, "--prompt", "hi", "--device", "cuda:7", "--device", "cpu"],
    "ensemble/device-foo": lambda t: [*ENS, "--prompt", "hi", "--device", "foo", "--device", "cpu"],
    "graft/plot-bad-suffix": lambda t: ["graft", "dus", "zoo:base", str(t / "o"), "--drop", "1", "--plot", "p.xyz"],
    "moe-inspect/plot-bad-suffix": lambda t: ["moe", "inspect", "zoo:base", "--data", str(_text(t)), "--plot", "p.xyz"],
    "demo/per-op-0": lambda t: ["demo", "--per-op", "0"],
    "demo/only-unknown": lambda t: ["demo", "--only", "foo"],
    "zoo-eval/per-op-0": lambda t: ["zoo", "eval", "base", "--per-op", "0"],
    "exchange/zoo-questions-negative": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--zoo-questions", "-1", "-o", str(t / "r.jsonl"),
    ],
    "vote/embedding-model-empty-dir": lambda t: [
        "vote", str(_votes(t)), "-o", str(t / "o.jsonl"), "--similarity", "embedding",
        "--embedding-model", str(_empty_dir(t)),
    ],
    "vote/embedding-model-causal-lm": lambda t: [
        "vote", str(_votes(t)), "-o", str(t / "o.jsonl"), "--similarity", "embedding",
        "--embedding-model", str(_model_copy(t)),
    ],
    "vote/answer-regex-without-answer": lambda t: [
        "vote", str(_votes(t)), "-o", str(t / "o.jsonl"), "--answer-regex", "(\\d+)",
    ],
    # a model directory missing parts or with broken files (item 16, 18)
    "ensemble/no-tokenizer": lambda t: ["ensemble", "--model", str(_no_tokenizer(t)), "--prompt", "hi"],
    "ensemble/malformed-config": lambda t: ["ensemble", "--model", str(_bad_config(t)), "--prompt", "hi"],
    "ensemble/bare-hub-id": lambda t: ["ensemble", "--model", "gpt2-not-cached", "--prompt", "hi"],
    "graft/no-tokenizer": lambda t: ["graft", "dus", str(_no_tokenizer(t)), str(t / "o"), "--drop", "1"],
    # records and recipes with values that would be silently misread (item 17, 18)
    "ensemble/prompt-not-a-string": lambda t: [
        *ENS, "--input", str(_bad_file(t, "p.jsonl", b'{"prompt": 5}\n')), "-o", str(t / "o.jsonl"),
    ],
    "exchange/question-id-a-list": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--input", str(_bad_file(t, "q.jsonl", b'{"id": [1], "question": "x"}\n')),
        "-o", str(t / "r.jsonl"),
    ],
    "moa/layer-max-tokens-negative": lambda t: [
        "moa", "--no-progress", "--config", str(_moa_caps(t)), "--input", str(_questions(t)), "-o", str(t / "r.jsonl"),
    ],
}  # fmt: skip


def _moa_caps(tmp: Path) -> Path:
    text = (EX / "exchange" / "moa_scripted.yaml").read_text()
    p = tmp / "moa.yaml"
    p.write_text(text.replace("layer_max_tokens: [256, 128]", "layer_max_tokens: [-5, 128]"))
    return p


def _no_tokenizer(tmp: Path) -> Path:
    m = _model_copy(tmp)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (m / f).unlink()
    return m


def _bad_config(tmp: Path) -> Path:
    m = _model_copy(tmp)
    (m / "config.json").write_text("{bad")
    return m


def _empty_dir(tmp: Path) -> Path:
    d = tmp / "enc"
    d.mkdir()
    return d


_MOE: list[Path] = []


def _tiny_moe() -> Path:
    """A small MoE built once per session (from the zoo), for the moe inspect / train-router cases."""
    if not _MOE:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="lmfuse-faults-moe-")) / "moe"
        recipe = _moe_recipe(out.parent)
        assert main(["moe", "build", str(recipe), str(out)]) == 0
        _MOE.append(out)
    return _MOE[0]


NOT_UTF8 = "not UTF-8 (byte 0x"
CANNOT_WRITE = "is a file, not a directory"
IS_DIR = "is a directory; expected a"
CORRUPT = "not a valid safetensors file"
EXPECT = {  # what each case's one line must say: the intended fault, not some other problem
    **{c: NOT_UTF8 for c in CASES if c.endswith(("non-utf8", "non-utf8-input", "-recipe", "resume-file"))},
    **{c: CANNOT_WRITE for c in CASES if c.endswith("parent-is-file")},
    **{c: IS_DIR for c in CASES if c.endswith("output-is-dir")},
    **{c: CORRUPT for c in CASES if c.endswith("-weights")},
    "ensemble/existing-output": "already exists; pass --overwrite",
    **{c: "too long for the model" for c in CASES if "oversize" in c or "max-input" in c},
    "ensemble/device-cuda-without-gpu": "CUDA device(s); use cpu or auto",
    "ensemble/device-foo": "device: expected cpu, cuda, cuda:N, mps or auto, found 'foo'",
    "graft/plot-bad-suffix": "--plot p.xyz: expected a file ending in .png",
    "moe-inspect/plot-bad-suffix": "--plot p.xyz: expected a file ending in .png",
    "demo/per-op-0": "per_op: expected 1 to 100 questions per operation, found 0",
    "demo/only-unknown": "--only: unknown method(s) 'foo'",
    "zoo-eval/per-op-0": "per_op: expected 1 to 100",
    "exchange/zoo-questions-negative": "per_op: expected 1 to 100",
    "vote/embedding-model-empty-dir": "holds no model (no modules.json or config.json)",
    "vote/embedding-model-causal-lm": "is a causal language model (LlamaForCausalLM), not a sentence encoder",
    "vote/answer-regex-without-answer": "--answer-regex applies only with --similarity answer",
    "ensemble/no-tokenizer": "no tokenizer in",
    "ensemble/malformed-config": "config.json: not valid JSON",
    "ensemble/bare-hub-id": "is not a local directory and could not be loaded from the Hugging Face cache",
    "graft/no-tokenizer": "has no tokenizer files, so the output would have none",
    "ensemble/prompt-not-a-string": "found keys ['prompt'] (\"prompt\" is a number)",
    "exchange/question-id-a-list": 'expected "id" to be a string or an integer, found keys [\'id\'] ("id" is an array)',
    "moa/layer-max-tokens-negative": "layer_max_tokens[0]: expected >= 1, found -5",
    "ensemble/output-is-input": "is the --input file",
}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _is_progress(line: str) -> bool:
    return "%|" in line or "it/s]" in line or "s/it]" in line


def check_clean_failure(code: int, err: str, before: dict[str, bytes], root: Path) -> None:
    assert code in (1, 2), f"exit {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not _is_progress(ln)]
    assert len(lines) == 1, f"expected one line on stderr, found {len(lines)}:\n{err}"
    assert lines[0].startswith("lmfuse ") and ": error: " in lines[0], lines[0]
    after = snapshot(root)
    assert after.keys() == before.keys(), f"files added or removed: {after.keys() ^ before.keys()}"
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"files changed: {changed}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_in_process(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = CASES[case](tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    check_clean_failure(code, err, before, tmp_path)
    assert EXPECT[case] in err


def test_every_case_says_what_it_tests():
    assert set(EXPECT) == set(CASES)


# ---------------------------------------------------------------- faults that need their own process

_LIMITED = textwrap.dedent(
    """
    import contextlib, io, json, os, resource, signal, sys, traceback
    from lmfuse.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    results = {}
    for name, cwd, limit, argv in json.loads(sys.argv[1]):
        os.chdir(cwd)
        err = io.StringIO()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except BaseException:
            code, _ = -1, err.write(traceback.format_exc())
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        results[name] = [code, err.getvalue()]
    print(json.dumps(results))
    """
)

FULL_DISK = {
    "graft": lambda t: ["graft", "dus", "zoo:base", str(t / "o"), "--drop", "1"],
    "vote": lambda t: ["vote", str(_many_votes(t)), "-o", str(t / "o.jsonl"), "--no-progress"],
    "moe-build": lambda t: ["moe", "build", str(_moe_recipe(t)), str(t / "o")],
    "exchange": lambda t: [
        *EXCH, "--config", str(_eot(t)), "--input", str(_questions(t)), "-o", str(t / "r.jsonl"),
    ],
    "ensemble": lambda t: [*ENS, "--input", str(_prompts(t)), "-o", str(t / "o.jsonl"), "--no-progress"],
    "train": lambda t: [
        "train", "zoo:base", "--data", str(_text(t)), "--steps", "2", "--seq-len", "16", "--out", str(t / "t"),
    ],
}  # fmt: skip
LIMITS = {"exchange": 100, "ensemble": 20}  # bytes: below what each writes (a recipe, a completion line)


def _many_votes(tmp: Path) -> Path:
    p = tmp / "v.jsonl"
    p.write_text("".join(f'{{"id": {i}, "candidates": ["{"a" * 100}", "b"]}}\n' for i in range(400)))
    return p


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """Every FULL_DISK case run under a file-size limit, all in one process (one torch import)."""
    cases, before = [], {}
    for name in sorted(FULL_DISK):
        root = tmp_path_factory.mktemp(name)
        cases.append([name, str(root), LIMITS.get(name, 40_000), FULL_DISK[name](root)])
        before[name] = (root, snapshot(root))
    proc = subprocess.run(
        [sys.executable, "-c", _LIMITED, json.dumps(cases)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (*results[name], *before[name]) for name in results}


@pytest.mark.parametrize("case", sorted(set(FULL_DISK) - {"train"}))
def test_full_disk(case, full_disk):
    code, err, root, before = full_disk[case]
    check_clean_failure(code, err, before, root)
    assert "too large" in err or "space" in err


def test_full_disk_during_train_keeps_the_log_and_no_model(full_disk):
    """train: the model fails to save at the end; OUT keeps its in-progress log, nothing looks finished."""
    code, err, root, before = full_disk["train"]
    assert code == 1 and "Traceback" not in err, err
    assert "file too large" in err.strip().splitlines()[-1]
    assert {k: v for k, v in snapshot(root).items() if not k.startswith("t/")} == before
    assert (root / "t" / "train_log.jsonl").is_file() and not (root / "t" / "config.json").exists()
    assert not list(root.glob(".t.partial-*"))


_HOLD = textwrap.dedent(
    """
    import sys, time
    from lmfuse.core.atomic import output_lock
    with output_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
    """
)

CONCURRENT = {
    "vote": (lambda t: t / "o.jsonl", lambda t, o: ["vote", str(_votes(t)), "-o", str(o)]),
    "graft": (lambda t: t / "o", lambda t, o: ["graft", "dus", "zoo:base", str(o), "--drop", "1"]),
    "exchange": (
        lambda t: t / "r.jsonl",
        lambda t, o: [*EXCH, "--config", str(_eot(t)), "--input", str(_questions(t)), "-o", str(o)],
    ),
    "ensemble": (
        lambda t: t / "o.jsonl",
        lambda t, o: [*ENS, "--input", str(_prompts(t)), "-o", str(o)],
    ),
    "train": (
        lambda t: t / "o",
        lambda t, o: ["train", "zoo:base", "--data", str(_text(t)), "--steps", "1", "--out", str(o)],
    ),
    "moe-build": (lambda t: t / "o", lambda t, o: ["moe", "build", str(_moe_recipe(t)), str(o)]),
}


@pytest.mark.parametrize("case", sorted(CONCURRENT))
def test_concurrent_run_fails_clearly(case, tmp_path, capsys):
    """Another process writing the same output: this run fails at once, the other's work is untouched."""
    out_of, argv_of = CONCURRENT[case]
    out = out_of(tmp_path)
    argv = argv_of(tmp_path, out)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        lock = f".{out.name}.lock"
        code = main(argv)
        err = capsys.readouterr().err
        before.pop(lock, None)
        check_clean_failure(code, err, {**before, lock: snapshot(tmp_path)[lock]}, tmp_path)
        assert f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(10)


def test_vote_skip_bad_skips_a_non_utf8_line(tmp_path, capsys):
    src = tmp_path / "l.jsonl"
    src.write_bytes(BAD + b'{"id": 2, "candidates": ["a", "a", "b"]}\n')
    assert main(["vote", str(src), "--skip-bad", "-o", str(tmp_path / "o.jsonl"), "--no-progress"]) == 0
    assert "l.jsonl:1: column 30: not UTF-8 (byte 0xe9)" in capsys.readouterr().err
    assert [line.startswith('{"id": 2') for line in (tmp_path / "o.jsonl").read_text().splitlines()] == [True]


def test_every_problem_is_reported_in_one_pass(tmp_path, capsys):
    """Option, recipe and model problems together, in the flags' own terms (issue 15, item 17)."""
    dus = ["graft", "dus", "zoo:base", str(tmp_path / "o"), "--drop", "10", "--dtype", "foo"]
    assert main([*dus, "--max-shard-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--max-shard-size: expected a size" in err and "--drop 10: expected 1 to 3" in err
    assert "--dtype: expected one of" in err and "-6" not in err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("slices:\n  - {model: zoo:base, layers: [0, 9]}\ndtype: foo\n")
    assert main(["graft", "run", str(recipe), str(tmp_path / "o"), "--max-shard-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "(3 problems)" in err and "[0, 9] is out of range" in err and "dtype: expected" in err
    moe = tmp_path / "m.yaml"
    moe.write_text("base: zoo:base\ndtype: foo\nexperts:\n  - source: zoo:nope\n    positive_prompts: [a]\n")
    assert main(["moe", "build", str(moe), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "dtype: expected one of" in err and "experts[0]: no model directory" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
@pytest.mark.parametrize(
    "argv_of",
    [
        lambda t, ro: ["vote", str(_votes(t)), "-o", str(ro / "o.jsonl")],
        lambda t, ro: [*ENS, "--input", str(_prompts(t)), "-o", str(ro / "o.jsonl")],
        lambda t, ro: ["graft", "dus", "zoo:base", str(ro / "g"), "--drop", "1"],
        lambda t, ro: ["train", "zoo:base", "--data", str(_text(t)), "--steps", "1", "--out", str(ro / "t")],
    ],
    ids=["vote", "ensemble", "graft", "train"],
)
def test_read_only_output_directory(argv_of, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = argv_of(tmp_path, ro)
    ro.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        code = main(argv)
        err = capsys.readouterr().err
        check_clean_failure(code, err, before, tmp_path)
        assert "is not writable" in err
    finally:
        ro.chmod(0o755)
