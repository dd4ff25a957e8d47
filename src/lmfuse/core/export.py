"""Write a new checkpoint from a plan of output tensors, streaming, with bounded memory, atomically.

Shared by every method that builds checkpoints from others (grafting, MoE from dense). The caller
describes each output tensor up front (``ExportTensor``: name, shape, dtype, where its values come
from); ``export_checkpoint`` then validates the plan, and inside an ``atomic_output_dir`` writes

- sharded safetensors (``model-0000i-of-0000n.safetensors`` + index, or one ``model.safetensors``),
  header first, each tensor streamed to disk: a tensor whose bytes already sit unchanged in a source
  safetensors file is copied file-to-file (``copy_file_range``), never decoded; any other is
  materialised alone, checked against its declared shape and dtype, written and dropped;
- ``config.json``, tokenizer and generation-config files copied from a source directory;
- provenance: the resolved recipe (``lmfuse_recipe.yaml``) and ``lmfuse_provenance.json`` (lmfuse
  version, inputs, date), plus any extra text files (model card, plan).

Peak memory is therefore about one materialised tensor, independent of the shard size.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from lmfuse.core.atomic import atomic_output_dir
from lmfuse.core.checkpoint import SAFE_INDEX, CheckpointReader
from lmfuse.errors import CheckpointError

DTYPE_TAGS = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}  # fmt: skip
TAG_DTYPES = {tag: dtype for dtype, tag in DTYPE_TAGS.items()}

SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "generation_config.json",
)  # fmt: skip
"""Files copied from the source directory next to the weights (those that exist)."""

RECIPE_FILE = "lmfuse_recipe.yaml"
PROVENANCE_FILE = "lmfuse_provenance.json"
_COPY_CHUNK = 64 * 1024**2


@dataclass(frozen=True)
class RawBytes:
    """A tensor's exact bytes inside a file: ``nbytes`` bytes starting at ``offset``."""

    path: Path
    offset: int
    nbytes: int


@dataclass(frozen=True)
class ExportTensor:
    """One output tensor: its name, shape and dtype, and how to get its values.

    ``raw`` (optional) points at bytes identical to the output, copied without decoding; otherwise
    ``load()`` returns the tensor (any device/layout; it must have exactly ``shape`` and ``dtype``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    load: Callable[[], torch.Tensor]
    raw: RawBytes | None = None

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for s in self.shape:
            n *= s
        return n

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@lru_cache(maxsize=512)
def _safetensors_header(path: str, mtime_ns: int) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return 8 + size, header


def raw_bytes(reader: CheckpointReader, name: str) -> tuple[RawBytes, tuple[int, ...], torch.dtype] | None:
    """Where tensor ``name`` of ``reader`` sits in its safetensors file; ``None`` for ``.bin`` files."""
    path = reader.file_of(name)
    if path.suffix != ".safetensors":
        return None
    start, header = _safetensors_header(str(path), path.stat().st_mtime_ns)
    entry = header[name]
    begin, end = entry["data_offsets"]
    return RawBytes(path, start + begin, end - begin), tuple(entry["shape"]), TAG_DTYPES[entry["dtype"]]


def from_source(
    reader: CheckpointReader, source_name: str, out_name: str, dtype: torch.dtype | None = None
) -> ExportTensor:
    """Output tensor ``out_name`` = tensor ``source_name`` of ``reader``, cast to ``dtype`` if given.

    Same dtype and a safetensors source → a byte copy; otherwise loaded and cast when written.
    """
    located = raw_bytes(reader, source_name)
    if located is not None:
        raw, shape, src_dtype = located
    else:
        shape, src_dtype = reader.meta(source_name)
        raw = None
    out_dtype = dtype or src_dtype
    if out_dtype != src_dtype:
        raw = None

    def load() -> torch.Tensor:
        return reader.get(source_name).to(out_dtype)

    return ExportTensor(out_name, tuple(shape), out_dtype, load, raw)


def check_plan(tensors: Sequence[ExportTensor]) -> list[str]:
    """Problems with a tensor plan (duplicate names, unsupported dtypes, negative sizes), all at once."""
    problems, seen = [], set()
    for t in tensors:
        if t.name in seen:
            problems.append(f"output tensor {t.name!r} is planned twice")
        seen.add(t.name)
        if t.dtype not in DTYPE_TAGS:
            problems.append(f"output tensor {t.name!r}: dtype {t.dtype} cannot be stored in safetensors")
        if any(s < 0 for s in t.shape):
            problems.append(f"output tensor {t.name!r}: negative dimension in shape {t.shape}")
    if not tensors:
        problems.append("the plan has no output tensors")
    return problems


def shard_plan(tensors: Sequence[ExportTensor], max_shard_bytes: int) -> list[list[ExportTensor]]:
    """Group tensors, in order, into shards of at most ``max_shard_bytes`` (a larger tensor sits alone)."""
    shards: list[list[ExportTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def safetensors_header(shard: Sequence[ExportTensor]) -> bytes:
    """The header of a safetensors file holding ``shard`` in order (length prefix + JSON, 8-aligned)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in shard:
        header[t.name] = {
            "dtype": DTYPE_TAGS[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)  # tensor data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _copy_range(raw: RawBytes, fd: int) -> None:
    """Append ``raw``'s bytes to ``fd``, in the kernel when it can (no user-space buffer)."""
    with open(raw.path, "rb", buffering=0) as src:
        done = 0
        try:
            while done < raw.nbytes:
                n = os.copy_file_range(src.fileno(), fd, raw.nbytes - done, raw.offset + done)
                if n == 0:
                    break
                done += n
        except OSError:  # no copy_file_range on these file systems: plain chunked copy
            src.seek(raw.offset + done)
            while done < raw.nbytes:
                chunk = src.read(min(_COPY_CHUNK, raw.nbytes - done))
                if not chunk:
                    break
                _write_all(fd, chunk)
                done += len(chunk)
        if done < raw.nbytes:
            raise CheckpointError(f"{raw.path} ends before byte {raw.offset + raw.nbytes}; is it truncated?")


def _write_loaded(t: ExportTensor, fd: int) -> None:
    value = t.load()
    if tuple(value.shape) != t.shape or value.dtype != t.dtype:
        raise CheckpointError(
            f"tensor {t.name!r}: planned {t.dtype} {list(t.shape)}, produced {value.dtype} {list(value.shape)}"
        )
    flat = value.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel():
        _write_all(fd, flat.view(torch.uint8).numpy())


def write_safetensors(
    tensors: Sequence[ExportTensor],
    directory: str | Path,
    max_shard_bytes: int = 2 * 1024**3,
    progress: bool = False,
) -> list[Path]:
    """Stream ``tensors`` into sharded safetensors files (+ index when more than one) in ``directory``.

    Returns the weight files written. Memory: one loaded tensor at a time; byte copies use none.
    """
    from tqdm.auto import tqdm

    problems = check_plan(tensors)
    if problems:
        raise CheckpointError("invalid tensor plan: " + "; ".join(problems))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shards = shard_plan(tensors, max_shard_bytes)
    n = len(shards)
    names = (
        ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    )
    total = sum(t.nbytes for t in tensors)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="writing", disable=not progress)
    try:
        for shard, fname in zip(shards, names, strict=True):
            fd = os.open(directory / fname, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                _write_all(fd, safetensors_header(shard))
                for t in shard:
                    if t.raw is not None and t.raw.nbytes == t.nbytes:
                        _copy_range(t.raw, fd)
                    else:
                        _write_loaded(t, fd)
                    bar.update(t.nbytes)
            finally:
                os.close(fd)
    finally:
        bar.close()
    if n > 1:
        index = {
            "metadata": {"total_size": total},
            "weight_map": {t.name: fname for shard, fname in zip(shards, names, strict=True) for t in shard},
        }
        (directory / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
    return [directory / f for f in names]


def copy_side_files(
    source: str | Path, directory: str | Path, names: Iterable[str] = SIDE_FILES
) -> list[str]:
    """Copy tokenizer / generation-config files that exist in ``source`` into ``directory``."""
    copied = []
    for name in names:
        src = Path(source) / name
        if src.is_file():
            shutil.copyfile(src, Path(directory) / name)
            copied.append(name)
    return copied


def provenance(inputs: dict[str, str], method: str, **extra: Any) -> dict[str, Any]:
    """The provenance record written next to an output: lmfuse version, method, inputs, UTC time."""
    from lmfuse import __version__

    return {
        "lmfuse_version": __version__,
        "method": method,
        "inputs": inputs,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export_checkpoint(
    out: str | Path,
    tensors: Sequence[ExportTensor],
    config: dict[str, Any],
    *,
    recipe_yaml: str,
    provenance_record: dict[str, Any],
    side_files_from: str | Path | None = None,
    extra_files: dict[str, str | bytes] | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = 2 * 1024**3,
    progress: bool = False,
) -> Path:
    """Write a complete model directory at ``out`` atomically; returns ``out``.

    ``config`` is the ``config.json`` content; ``extra_files`` maps file names to text (model card,
    plan) or bytes. Nothing appears at ``out`` unless every file was written.
    """
    problems = check_plan(tensors)
    if problems:
        raise CheckpointError("invalid tensor plan: " + "; ".join(problems))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the output is an ordinary directory
        if side_files_from is not None:
            copy_side_files(side_files_from, tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / RECIPE_FILE).write_text(recipe_yaml)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance_record, indent=2) + "\n")
        for name, content in (extra_files or {}).items():
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(content)
        write_safetensors(tensors, tmp, max_shard_bytes=max_shard_bytes, progress=progress)
    return Path(out)
