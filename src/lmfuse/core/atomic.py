"""Atomic outputs: files and directories appear complete or not at all (no torch import here).

Everything is built beside its target (a hidden temporary file or directory in the same folder, so the
final ``os.replace`` is atomic) and renamed into place only when complete; on any error, Ctrl-C
included, the temporary is removed and the target is left as it was.

Three more guarantees:

- **One writer per output.** ``output_lock(target)`` takes an ``fcntl.flock`` on ``.NAME.lock`` beside the
  target; a second run writing the same output fails at once, naming the pid that holds it.
- **No stale partials.** Temporaries are named ``.NAME.partial-PID-…``; a run that was SIGKILLed leaves
  them behind, and the next run on the same output removes those whose process is gone.
- **``--overwrite`` replaces only what lmfuse wrote.** Every output directory carries ``.lmfuse-output``
  listing its files; an existing directory holding anything else is refused even with ``overwrite``.

Permissions follow the umask like any ordinary file (``mkstemp``/``mkdtemp`` alone would make them
private); a replaced file keeps its mode.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from lmfuse.errors import CheckpointError

MARKER = ".lmfuse-output"
"""File inside every output directory lmfuse writes: the list of files it put there."""

_held: dict[Path, list] = {}  # lock path -> [fd, depth]: the lock is re-entrant within one process


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: str | Path) -> Iterator[None]:
    """Hold the lock of ``target`` (a file or directory to be written) for the block; fail at once if
    another process holds it. Re-entrant in one process. Also removes dead runs' partials of ``target``."""
    target = Path(target).absolute()
    lock = _lock_path(target)
    if lock in _held:
        _held[lock][1] += 1
        try:
            yield
        finally:
            _held[lock][1] -= 1
        return
    check_writable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, target)
    _held[lock] = [fd, 1]
    try:
        clean_stale(target)
        yield
    finally:
        del _held[lock]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def _acquire(lock: Path, target: Path) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise CheckpointError(
                f"{target} is being written by another lmfuse run (pid {holder}); "
                "wait for it to finish or choose another output"
            ) from None
        # the holder before us may have unlinked the file after we opened it: lock the live file only
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: str | Path) -> list[Path]:
    """Remove ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` left beside ``target`` by dead processes."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for p in target.parent.glob(f".{target.name}.{kind}-*"):
            pid = p.name[len(f".{target.name}.{kind}-") :].split("-", 1)[0]
            if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def read_marker(out: str | Path) -> dict | None:
    """The ``.lmfuse-output`` record of a directory lmfuse wrote, or ``None``."""
    try:
        record = json.loads((Path(out) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None


def mark_in_progress(out: str | Path, files: list[str], folders: list[str], **state) -> None:
    """Mark ``out`` as an lmfuse output still being written *in place* (a training run's checkpoints and
    log): it owns ``files`` and everything under ``folders``; ``state`` is kept for a resume."""
    from lmfuse import __version__

    record = {"lmfuse": __version__, "in_progress": True, "files": files, "folders": folders, **state}
    atomic_write_text(Path(out) / MARKER, json.dumps(record, indent=1) + "\n")


def _foreign_files(out: Path) -> list[str]:
    """Files in ``out`` that its ``.lmfuse-output`` marker does not list (all of them without a marker)."""
    record = read_marker(out) or {"files": []}
    listed = set(record["files"])
    folders = tuple(f"{f.rstrip('/')}/" for f in record.get("folders", []))
    present = {str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir()}
    return sorted(p for p in present - listed - {MARKER} if not (folders and p.startswith(folders)))


def check_output_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Refuse a non-empty output directory unless ``overwrite``, and with ``overwrite`` one holding files
    lmfuse did not write; check the parent is writable. Call before any expensive work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise CheckpointError(
                f"output directory {out} exists and is not empty; pass overwrite=True (--overwrite)"
            )
        if foreign := _foreign_files(out):
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise CheckpointError(
                f"output directory {out} holds files lmfuse did not write ({shown}); --overwrite replaces "
                "only lmfuse outputs: move those files away or choose another output directory"
            )
    check_writable(out)
    return out


def check_writable(target: str | Path) -> None:
    """Fail now (not after hours of work) if ``target``'s folder cannot hold a new file."""
    target = Path(target).absolute()
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CheckpointError(f"cannot write {target}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot write {target}: directory {parent} is not writable")


def _write_marker(tmp: Path) -> None:
    from lmfuse import __version__

    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if not p.is_dir())
    (tmp / MARKER).write_text(json.dumps({"lmfuse": __version__, "files": files}, indent=1) + "\n")


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; rename it to ``out`` only if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary directory is removed and ``out`` is left
    as it was. With ``overwrite``, an existing ``out`` is replaced only after the new one is complete.
    """
    out = Path(out)
    with output_lock(out):
        out = check_output_dir(out, overwrite)
        out.parent.mkdir(parents=True, exist_ok=True)
        stamp = f"{os.getpid()}-"
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{stamp}", dir=out.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the output is an ordinary dir
            yield tmp
            _write_marker(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{stamp}", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)


def _mkstemp_beside(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` with the mode ``path`` has (or the umask gives a new file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    os.fchmod(fd, mode)
    return fd, tmp


def _refuse_dir(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(f"output {path} is a directory; expected a file path")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    _refuse_dir(path)
    check_writable(path)
    with output_lock(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _mkstemp_beside(path)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path: str | Path, dpi: float | None = None) -> Path:
    """Render a matplotlib figure in memory (format from the suffix) and write it atomically, so a
    failed or interrupted save never leaves a half-written picture."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    kwargs = {} if dpi is None else {"dpi": dpi}
    fig.savefig(buf, format=path.suffix.lstrip(".").lower(), **kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return path


def check_output_option(path: str | Path | None, overwrite: bool, error: Callable[[str], Any]) -> None:
    """A script's output-file option (a benchmark's ``--json``), checked before its work starts: what
    ``check_output_file`` refuses goes to ``error`` (``argparse``'s ``parser.error``: one line, exit 2)."""
    if path is None:
        return
    try:
        check_output_file(path, overwrite)
    except CheckpointError as exc:
        error(str(exc))


def check_output_file(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse a directory, an existing file unless ``overwrite``, and an unwritable folder."""
    path = Path(path)
    _refuse_dir(path)
    if path.exists() and not overwrite:
        raise CheckpointError(
            f"output {path} already exists; pass --overwrite (overwrite=True) to replace it"
        )
    check_writable(path)
    return path


@contextlib.contextmanager
def atomic_open(path: str | Path, overwrite: bool = False) -> Iterator[TextIO]:
    """Open a text file for streaming writes; it appears at ``path`` only if the block succeeds.

    An existing file is refused unless ``overwrite``; a directory at ``path`` is always refused.
    """
    path = check_output_file(path, overwrite)
    with output_lock(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _mkstemp_beside(path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                yield fh
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same file (after links), existing or not."""
    a, b = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


IMAGE_SUFFIXES = ("png", "pdf", "svg", "jpg", "jpeg", "webp", "eps", "ps", "tif", "tiff")


def check_image_path(path: str | Path, option: str = "--plot") -> Path:
    """A picture's path: a suffix matplotlib writes, in a writable folder; call before the work."""
    from lmfuse.errors import ConfigError

    path = Path(path)
    if path.suffix.lower().lstrip(".") not in IMAGE_SUFFIXES:
        raise ConfigError(
            f"{option} {path}: expected a file ending in .{', .'.join(IMAGE_SUFFIXES)}, found "
            f"{path.suffix or 'no suffix'!r}"
        )
    _refuse_dir(path)
    check_writable(path)
    return path
