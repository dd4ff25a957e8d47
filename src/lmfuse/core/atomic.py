"""Atomic outputs: files and directories appear complete or not at all (no torch import here).

Everything is built beside its target (a hidden temporary file or directory in the same folder, so the
final ``os.replace`` is atomic) and renamed into place only when complete; on any error, Ctrl-C
included, the temporary is removed and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from lmfuse.errors import CheckpointError


def check_output_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse a non-empty output directory unless ``overwrite``; call before any expensive work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(
            f"output directory {out} exists and is not empty; pass overwrite=True (--overwrite)"
        )
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; rename it to ``out`` only if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary directory is removed and ``out`` is left
    as it was. With ``overwrite``, an existing ``out`` is replaced only after the new one is complete.
    """
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / "old")
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file via a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, overwrite: bool = False) -> Iterator[TextIO]:
    """Open a text file for streaming writes; it appears at ``path`` only if the block succeeds.

    An existing file is refused unless ``overwrite``; a directory at ``path`` is always refused.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"output {path} is a directory; expected a file path")
    if path.exists() and not overwrite:
        raise CheckpointError(
            f"output {path} already exists; pass --overwrite (overwrite=True) to replace it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
