"""The one place where ``lmfuse.exchange`` gets its answer extractor.

It must be ``lmfuse.vote``'s ``extract_answer(text, kind) -> str | None``. Until the vote branch is
merged, a stand-in with the same interface and the EoT reference rules is used (METHODS.md §1): the
text after the last "the answer is", commas stripped, first number; without the phrase, the last
number; ``choice``: a letter A-E; ``yesno``: yes/no.
"""

from __future__ import annotations

import re

try:  # the shared extractor, once lmfuse.vote exists
    from lmfuse.vote.extract import extract_answer as _shared
except ImportError:  # pragma: no cover - depends on which branches are merged
    _shared = None

KINDS = ("number", "choice", "yesno")
_PHRASE = re.compile(r"the answer is", re.IGNORECASE)
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
_CHOICE = re.compile(r"\(?\b([A-E])\b\)?")
_YESNO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def _stand_in(text: str, kind: str = "number") -> str | None:
    if kind not in KINDS:
        raise ValueError(f"answer kind must be one of {', '.join(KINDS)}, found {kind!r}")
    parts = _PHRASE.split(text or "")
    tail = parts[-1] if len(parts) > 1 else None
    if kind == "number":
        if tail is not None and (m := _NUM.search(tail.replace(",", ""))):
            return _norm(m.group(0))
        found = _NUM.findall((text or "").replace(",", ""))
        return _norm(found[-1]) if found else None
    pattern = _CHOICE if kind == "choice" else _YESNO
    if tail is not None and (m := pattern.search(tail)):
        return m.group(1).upper() if kind == "choice" else m.group(1).lower()
    found = pattern.findall(text or "")
    if not found:
        return None
    return found[-1].upper() if kind == "choice" else found[-1].lower()


def _norm(number: str) -> str:
    """``"85.0"`` → ``"85"``, ``"007"`` → ``"7"``: equal numbers compare equal as text."""
    value = float(number)
    return str(int(value)) if value.is_integer() else str(value)


extract_answer = _shared if _shared is not None else _stand_in
