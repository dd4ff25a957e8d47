"""Checkpoint IO: a lazy reader over (sharded) safetensors or .bin files and a streaming sharded writer
(atomic output directories are in ``lmfuse.core.atomic``).

Memory stays bounded: the reader maps files and materialises one tensor at a time; the writer holds at
most one shard (``max_shard_bytes``) before flushing it. Outputs are built in a hidden temporary
directory beside the target and renamed into place only when complete, so a crash or Ctrl-C never
leaves a half-written model that looks complete.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lmfuse.errors import CheckpointError

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
DEFAULT_SHARD_BYTES = 2 * 1024**3


def open_safetensors(f: str | Path):
    """``safe_open`` a weights file; an empty, truncated or corrupt file is a ``CheckpointError``."""
    try:
        return safe_open(str(f), framework="pt")
    except SafetensorError as exc:
        raise CheckpointError(corrupt_weights(f, exc)) from None


def corrupt_weights(f: str | Path, exc: Exception) -> str:
    return (
        f"{f}: not a valid safetensors file ({exc}); it is empty, truncated or corrupt: "
        "re-create or re-download the model"
    )


class CheckpointReader:
    """Read tensors of a checkpoint directory by name, one at a time.

    Supports ``model.safetensors``, sharded safetensors with ``model.safetensors.index.json``, and the
    legacy ``pytorch_model.bin`` (sharded or not, loaded with ``mmap=True, weights_only=True``).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory not found: {self.directory}")
        self._safe: dict[Path, object] = {}
        self._bin: dict[Path, dict[str, torch.Tensor]] = {}
        self._where: dict[str, Path] = self._index()

    def _index(self) -> dict[str, Path]:
        d = self.directory
        for index_name in (SAFE_INDEX, BIN_INDEX):
            index = d / index_name
            if index.is_file():
                try:
                    weight_map = json.loads(index.read_text())["weight_map"]
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(f"{index}: not a valid index file ({exc})") from None
                missing = sorted({f for f in weight_map.values() if not (d / f).is_file()})
                if missing:
                    raise CheckpointError(f"{index} names shard files that do not exist: {missing[:3]}")
                return {name: d / f for name, f in weight_map.items()}
        files = sorted(d.glob("*.safetensors")) or sorted(d.glob("pytorch_model*.bin"))
        if not files:
            raise CheckpointError(
                f"no weights in {d}: expected model.safetensors, {SAFE_INDEX} or pytorch_model.bin"
            )
        where: dict[str, Path] = {}
        for f in files:
            for name in self._names_in(f):
                where[name] = f
        return where

    def _names_in(self, f: Path) -> list[str]:
        if f.suffix == ".safetensors":
            with open_safetensors(f) as h:
                return list(h.keys())
        return list(self._load_bin(f).keys())

    def _load_bin(self, f: Path) -> dict[str, torch.Tensor]:
        if f not in self._bin:
            self._bin[f] = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
        return self._bin[f]

    def keys(self) -> list[str]:
        """All tensor names, in file order."""
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def __len__(self) -> int:
        return len(self._where)

    def file_of(self, name: str) -> Path:
        return self._where[name]

    def get(self, name: str) -> torch.Tensor:
        """Materialise one tensor (a CPU tensor owned by the caller)."""
        if name not in self._where:
            raise CheckpointError(f"tensor {name!r} not found in {self.directory}")
        f = self._where[name]
        if f.suffix == ".safetensors":
            handle = self._safe.get(f)
            if handle is None:
                handle = self._safe[f] = open_safetensors(f)
            return handle.get_tensor(name)
        return self._load_bin(f)[name]

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of a tensor without reading its data (safetensors only reads the header)."""
        f = self._where[name]
        if f.suffix == ".safetensors":
            handle = self._safe.get(f) or self._safe.setdefault(f, open_safetensors(f))
            sl = handle.get_slice(name)
            return tuple(sl.get_shape()), _SAFE_DTYPES[sl.get_dtype()]
        t = self._load_bin(f)[name]
        return tuple(t.shape), t.dtype

    def total_bytes(self) -> int:
        total = 0
        for name in self._where:
            shape, dtype = self.meta(name)
            total += math.prod(shape) * dtype.itemsize
        return total


_SAFE_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip


class ShardedWriter:
    """Stream tensors into ``model-0000i-of-0000n.safetensors`` shards plus an index.

    Holds at most one shard in memory. Call ``add`` per tensor, then ``close`` once; with a single shard
    the file is ``model.safetensors`` and no index is written (the Hugging Face convention).
    """

    def __init__(self, directory: str | Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
        if max_shard_bytes <= 0:
            raise CheckpointError(f"max_shard_bytes must be positive, found {max_shard_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._shards: list[list[str]] = []
        self._names: set[str] = set()
        self.total_bytes = 0
        self._closed = False

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if self._closed:
            raise CheckpointError("writer already closed")
        if name in self._names:
            raise CheckpointError(f"tensor {name!r} written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._names.add(name)
        # contiguous + clone: safetensors refuses views and shared storage.
        self._buffer[name] = tensor.detach().to("cpu").contiguous().clone()
        self._buffer_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        if not self._buffer:
            return
        tmp_name = f"shard-{len(self._shards):05d}.tmp"
        save_file(self._buffer, str(self.directory / tmp_name), metadata={"format": "pt"})
        self._shards.append(list(self._buffer))
        self._buffer, self._buffer_bytes = {}, 0

    def close(self) -> list[Path]:
        """Flush, name the shards, write the index; returns the weight files written."""
        self._flush()
        self._closed = True
        n = len(self._shards)
        if n == 0:
            raise CheckpointError("no tensors were written")
        names = (
            ["model.safetensors"]
            if n == 1
            else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        for i, final in enumerate(names):
            os.replace(self.directory / f"shard-{i:05d}.tmp", self.directory / final)
        if n > 1:
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": {t: names[i] for i, shard in enumerate(self._shards) for t in shard},
            }
            (self.directory / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
        return [self.directory / f for f in names]
