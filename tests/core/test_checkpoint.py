import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from lmfuse.core.atomic import atomic_open, atomic_output_dir, atomic_write_text, check_output_dir
from lmfuse.core.checkpoint import SAFE_INDEX, CheckpointReader, ShardedWriter
from lmfuse.errors import CheckpointError


def _tensors(n=6, size=100):
    g = torch.Generator().manual_seed(0)
    return {f"layer.{i}.weight": torch.randn(size, generator=g) for i in range(n)}


def test_shard_round_trip_writes_index_and_reads_back_bit_exact(tmp_path):
    tensors = _tensors()
    writer = ShardedWriter(tmp_path, max_shard_bytes=900)  # 400 B per tensor → 2 per shard
    for name, t in tensors.items():
        writer.add(name, t)
    files = writer.close()
    assert [f.name for f in files] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / SAFE_INDEX).read_text())
    assert index["metadata"]["total_size"] == 6 * 400
    assert set(index["weight_map"]) == set(tensors)
    reader = CheckpointReader(tmp_path)
    assert reader.keys() == list(tensors)
    for name, t in tensors.items():
        assert torch.equal(reader.get(name), t)
        assert reader.meta(name) == ((100,), torch.float32)
    assert reader.total_bytes() == 2400
    assert not list(tmp_path.glob("*.tmp"))


def test_single_shard_has_no_index_and_mixed_dtypes(tmp_path):
    writer = ShardedWriter(tmp_path)
    writer.add("a", torch.ones(3, dtype=torch.bfloat16))
    writer.add("b", torch.arange(4))
    writer.close()
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / SAFE_INDEX).exists()
    reader = CheckpointReader(tmp_path)
    assert reader.get("a").dtype == torch.bfloat16 and torch.equal(reader.get("b"), torch.arange(4))


def test_writer_rejects_duplicates_and_views_are_saved_whole(tmp_path):
    writer = ShardedWriter(tmp_path)
    base = torch.arange(10.0)
    writer.add("view", base[2:5])
    with pytest.raises(CheckpointError, match="written twice"):
        writer.add("view", base)
    writer.close()
    assert torch.equal(CheckpointReader(tmp_path).get("view"), torch.tensor([2.0, 3.0, 4.0]))


def test_reader_reads_bin_checkpoints(tmp_path):
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "pytorch_model.bin")
    assert torch.equal(CheckpointReader(tmp_path).get("w"), torch.ones(2, 2))


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        CheckpointReader(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no weights"):
        CheckpointReader(tmp_path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "a.safetensors"))
    (tmp_path / SAFE_INDEX).write_text(json.dumps({"weight_map": {"x": "gone.safetensors"}}))
    with pytest.raises(CheckpointError, match="gone.safetensors"):
        CheckpointReader(tmp_path)
    (tmp_path / SAFE_INDEX).unlink()
    with pytest.raises(CheckpointError, match="'y' not found"):
        CheckpointReader(tmp_path).get("y")


def test_atomic_output_dir_renames_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "f.txt").write_text("done")
        assert not out.exists()
    assert (out / "f.txt").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_output_dir_failure_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(out) as tmp:
        (tmp / "half.safetensors").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "out"
    with atomic_output_dir(out) as tmp:
        (tmp / "old.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty"), atomic_output_dir(out):
        pass
    assert (out / "old.txt").read_text() == "keep me"
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [".lmfuse-output", "new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    check_output_dir(tmp_path / "empty-or-missing")


def test_killed_process_leaves_no_complete_looking_output(tmp_path):
    out = tmp_path / "out"
    code = f"""
import os, signal, torch
from lmfuse.core.atomic import atomic_output_dir
from lmfuse.core.checkpoint import ShardedWriter
with atomic_output_dir({str(out)!r}) as tmp:
    w = ShardedWriter(tmp, max_shard_bytes=100)
    for i in range(3):
        w.add(f"t{{i}}", torch.zeros(50))
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True)
    assert proc.returncode != 0
    assert not out.exists()


def test_atomic_write_text(tmp_path):
    target = tmp_path / "sub" / "recipe.yaml"
    atomic_write_text(target, "a: 1\n")
    assert target.read_text() == "a: 1\n"
    assert [p.name for p in target.parent.iterdir()] == ["recipe.yaml"]


def test_atomic_open_streams_and_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write("partial\n")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_open(target) as fh:
        fh.write("done\n")
    assert target.read_text() == "done\n"
    with pytest.raises(CheckpointError, match="already exists; pass --overwrite"):
        atomic_open(target).__enter__()
    with pytest.raises(CheckpointError, match="is a directory"):
        atomic_open(tmp_path).__enter__()
