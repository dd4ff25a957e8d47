"""One line for an I/O fault a user can act on (disk full, permissions, not UTF-8...), never a traceback.

The CLI catches ``OSError`` and ``UnicodeDecodeError`` that escape a command and prints
``describe_fault(exc)``: what failed, where, and what to do.
"""

from __future__ import annotations

import errno
import re
import sys

_OS_ERROR = re.compile(r"I/O error: .*\(os error (\d+)\)")

_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space and run again",
    errno.EFBIG: "file too large for the filesystem or the file-size limit (ulimit -f)",
    errno.EDQUOT: "disk quota exceeded; free some space and run again",
    errno.EROFS: "the filesystem is read-only; choose another output",
    errno.EACCES: "permission denied; choose a path you can write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a path you can write",
    errno.ENOTDIR: "a parent of the path is a file, not a directory",
    errno.EISDIR: "the path is a directory; give a file path",
    errno.ENOENT: "no such file or directory",
    errno.EMFILE: "too many open files (ulimit -n)",
    errno.ENOMEM: "out of memory",
}


def describe_fault(exc: BaseException) -> str:
    """``exc`` (an ``OSError`` or ``UnicodeDecodeError``) as one line: what, where, what to do."""
    if isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start : exc.start + 1].hex() if exc.object else "?"
        return (
            f"input is not UTF-8 text (byte 0x{bad} at offset {exc.start}); "
            "re-encode the file as UTF-8 (e.g. iconv -t UTF-8)"
        )
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        hint = _HINTS.get(exc.errno or -1, exc.strerror or str(exc))
        return f"{where}{hint}".replace("\n", " ")
    if m := _OS_ERROR.search(str(exc)):
        return f"writing a weights file failed: {_HINTS.get(int(m[1]), str(exc))}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_write_fault(exc: BaseException) -> bool:
    """A safetensors error that is an operating-system I/O error (disk full, permissions...)."""
    st = sys.modules.get("safetensors")
    return st is not None and isinstance(exc, st.SafetensorError) and bool(_OS_ERROR.search(str(exc)))
