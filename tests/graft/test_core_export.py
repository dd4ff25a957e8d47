"""core/export.py: streamed safetensors equal the planned tensors, byte copies included; atomic output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lmfuse.core.checkpoint import CheckpointReader, ShardedWriter
from lmfuse.core.export import (
    PROVENANCE_FILE,
    RECIPE_FILE,
    ExportTensor,
    export_checkpoint,
    from_source,
    provenance,
    write_safetensors,
)
from lmfuse.errors import CheckpointError


def _source(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.bf16": torch.randn(5, 7, generator=g).to(torch.bfloat16),
        "b.f32": torch.randn(3, generator=g),
        "c.i64": torch.arange(6).reshape(2, 3),
        "d.scalar": torch.tensor(2.5),
        "e.f16": torch.randn(4, 4, generator=g).half(),
    }
    w = ShardedWriter(tmp_path / "src", max_shard_bytes=64)
    for k, v in tensors.items():
        w.add(k, v)
    w.close()
    return tensors, CheckpointReader(tmp_path / "src")


def _read_all(directory):
    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            names = h.keys()
            for k in names:
                out[k] = h.get_tensor(k)
    return out


@pytest.mark.parametrize("shard_bytes", [1, 100, 10**9])
def test_stream_equals_plan(tmp_path, shard_bytes):
    tensors, reader = _source(tmp_path)
    plan = [from_source(reader, k, f"out.{k}") for k in tensors]
    plan.append(from_source(reader, "b.f32", "cast.b", dtype=torch.bfloat16))
    plan.append(ExportTensor("made", (2, 2), torch.float32, lambda: torch.eye(2)))
    assert sum(t.raw is not None for t in plan) == len(tensors)  # same-dtype sources are byte copies
    files = write_safetensors(plan, tmp_path / "out", max_shard_bytes=shard_bytes)
    got = _read_all(tmp_path / "out")
    assert set(got) == {t.name for t in plan}
    for k, v in tensors.items():
        assert got[f"out.{k}"].dtype == v.dtype and torch.equal(got[f"out.{k}"], v)
    assert torch.equal(got["cast.b"], tensors["b.f32"].to(torch.bfloat16))
    assert torch.equal(got["made"], torch.eye(2))
    if len(files) > 1:
        index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(got)
        assert CheckpointReader(tmp_path / "out").keys()  # the shared reader accepts what we wrote
    else:
        assert files[0].name == "model.safetensors"


def test_wrong_shape_from_load_is_an_error(tmp_path):
    bad = ExportTensor("x", (3,), torch.float32, lambda: torch.zeros(4))
    with pytest.raises(CheckpointError, match="planned"):
        write_safetensors([bad], tmp_path / "o")


def test_duplicate_names_rejected_before_writing(tmp_path):
    t = ExportTensor("x", (1,), torch.float32, lambda: torch.zeros(1))
    with pytest.raises(CheckpointError, match="twice"):
        export_checkpoint(tmp_path / "o", [t, t], {}, recipe_yaml="", provenance_record={})
    assert not (tmp_path / "o").exists()


def test_export_is_atomic_and_carries_provenance(tmp_path):
    tensors, reader = _source(tmp_path)
    (tmp_path / "src" / "tokenizer.json").write_text("{}")

    def boom():
        raise RuntimeError("disk on fire")

    plan = [from_source(reader, k, k) for k in tensors]
    with pytest.raises(RuntimeError):
        export_checkpoint(
            tmp_path / "o",
            [*plan, ExportTensor("late", (1,), torch.float32, boom)],
            {"model_type": "llama"},
            recipe_yaml="x: 1\n",
            provenance_record={},
        )
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]  # no output, no leftover temp dir
    record = provenance({"A": "src"}, "test")
    out = export_checkpoint(
        tmp_path / "o",
        plan,
        {"model_type": "llama"},
        recipe_yaml="x: 1\n",
        provenance_record=record,
        side_files_from=tmp_path / "src",
        extra_files={"README.md": "card"},
    )
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", RECIPE_FILE, PROVENANCE_FILE, "README.md"} <= names
    assert json.loads((out / PROVENANCE_FILE).read_text())["inputs"] == {"A": "src"}
    with pytest.raises(CheckpointError, match="not empty"):
        export_checkpoint(out, plan, {}, recipe_yaml="", provenance_record={})
