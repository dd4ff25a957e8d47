"""Final-answer extraction from free text, for self-consistency voting and Exchange-of-Thought.

``extract_answer(text, kind)`` returns a *normalised* answer string (so that equal answers compare equal)
or ``None`` when the text holds no answer of that kind. Kinds:

- ``number``: the EoT rule. If the text says "the answer is" (case-insensitive, last occurrence), the first
  number after it, or ``None`` when no number follows it; otherwise the last number in the text. Thousands separators (``1,234``) are removed
  and numbers are canonical (``085`` → ``85``, ``2.50`` → ``2.5``, ``-0`` → ``0``). A minus sign counts
  only when it does not follow a digit or letter, so ``37-48`` reads as ``37`` and ``48``.
- ``choice``: a choice letter (default ``A``-``E``): after "the answer is", else the last ``(X)``, else
  ``answer: X``, else the whole text when it is just the letter. Returned upper-case.
- ``yesno``: ``yes`` / ``no``: after "the answer is", else the last standalone yes/no word.
- ``boxed``: the content of the last ``\\boxed{...}`` (nested braces allowed), canonical if a number.
- ``phrase``: the text after the last "the answer is" up to the end of its sentence or line, with
  whitespace collapsed, case folded and a trailing period dropped.
- ``regex``: the last match of a user ``pattern``; its first group if it has groups, else the match.
- ``text``: no extraction: the whole text with whitespace runs collapsed to one space and stripped (case
  and punctuation kept), ``None`` when blank. With the ``answer`` similarity this is exact match of
  whitespace-normalised texts (``exact`` also folds case and Unicode forms).
- ``auto``: ``boxed`` if the text has a ``\\boxed{}``, else ``number``.

Nothing here imports torch; other methods (exchange, ensemble demos) reuse these functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from lmfuse.errors import ConfigError, InputDataError

KINDS = ("auto", "number", "choice", "yesno", "boxed", "phrase", "regex", "text")

_ANSWER_IS = re.compile(r"the\s+(?:final\s+)?answer\s+is\s*:?", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:\.\d+)?|\d+(?:\.\d+)?")
_YESNO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{")
_SENTENCE_END = re.compile(r"(?:\.(?:\s|$)|\n|$)")


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def canonical_number(token: str) -> str | None:
    """``"085"`` → ``"85"``, ``"2.50"`` → ``"2.5"``, ``"1,234"`` → ``"1234"``, ``"-0"`` → ``"0"``; else None."""
    token = token.strip().replace("−", "-").replace(",", "")
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _after_answer_is(text: str) -> str | None:
    """The text after the last "the answer is", or None when the phrase is absent."""
    last = _last_match(_ANSWER_IS, text)
    return None if last is None else text[last.end() :]


def extract_number(text: str) -> str | None:
    """The EoT rule: first number after "the answer is" (None if none follows), else the last number."""
    text = _THOUSANDS.sub("", text)
    tail = _after_answer_is(text)
    if tail is not None:  # the phrase without a number after it: nothing (as the EoT reference code)
        m = _NUMBER.search(tail)
        return canonical_number(m.group(0)) if m else None
    found = _NUMBER.findall(text)
    return canonical_number(found[-1]) if found else None


def extract_choice(text: str, choices: str = "ABCDE") -> str | None:
    """A choice letter among ``choices`` (upper-case), or None."""
    letters = re.escape(choices.upper())
    tail = _after_answer_is(text)
    if tail is not None:
        m = re.match(rf"\s*(?:option\s+)?\(?([{letters}])\b", tail, re.IGNORECASE)
        if m:
            return m.group(1).upper()
    found = re.findall(rf"\(([{letters}])\)", text)
    if found:
        return found[-1].upper()
    found = re.findall(rf"\banswer\s*[:=]\s*\(?([{letters}])\b", text, re.IGNORECASE)
    if found:
        return found[-1].upper()
    m = re.fullmatch(rf"\s*\(?([{letters}])\)?[.:]?\s*", text, re.IGNORECASE)
    return m.group(1).upper() if m else None


def extract_yesno(text: str) -> str | None:
    """``yes`` or ``no``: after "the answer is", else the last standalone yes/no word."""
    tail = _after_answer_is(text)
    if tail is not None:
        m = _YESNO.search(tail)
        if m:
            return m.group(1).lower()
    found = _YESNO.findall(text)
    return found[-1].lower() if found else None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (balanced braces), canonical if it is a number."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            content = " ".join(text[start : i - 1].split()).strip("$ ")
            return canonical_number(content) or content
    return None


def extract_phrase(text: str) -> str | None:
    """Text after the last "the answer is" up to the end of its sentence, normalised; else None."""
    tail = _after_answer_is(text)
    if tail is None:
        return None
    tail = tail.lstrip()
    end = _SENTENCE_END.search(tail)
    phrase = " ".join(tail[: end.start()].split()).casefold().rstrip(".").strip()
    if not phrase:
        return None
    return canonical_number(phrase) or phrase


def extract_text(text: str) -> str | None:
    """The whole text, whitespace collapsed and stripped; None when blank (kind ``text``)."""
    return " ".join(text.split()) or None


def extract_regex(text: str, pattern: re.Pattern[str]) -> str | None:
    """Last match of ``pattern``: group 1 if the pattern has groups, else the whole match."""
    last = _last_match(pattern, text)
    if last is None:
        return None
    value = last.group(1) if pattern.groups else last.group(0)
    return None if value is None else value.strip()


@dataclass(frozen=True)
class AnswerExtractor:
    """A configured extractor: ``AnswerExtractor("choice", choices="ABCD")(text) -> str | None``."""

    kind: str = "auto"
    pattern: str | None = None
    """Regular expression for ``kind="regex"`` (Python ``re`` syntax)."""
    choices: str = "ABCDE"
    """Letters accepted by ``kind="choice"``."""

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind: expected one of {', '.join(KINDS)}, found {self.kind!r}")
        if self.kind == "regex" and not self.pattern:
            problems.append("pattern: kind 'regex' needs a pattern, e.g. r'Final: (\\S+)'")
        if self.pattern and self.kind != "regex":
            problems.append(f"pattern: only used with kind 'regex', found kind {self.kind!r}")
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                problems.append(f"pattern: {self.pattern!r} is not a valid regular expression ({exc})")
        if not self.choices or not self.choices.isalpha():
            problems.append(f"choices: expected letters such as 'ABCDE', found {self.choices!r}")
        if problems:
            raise ConfigError(problems, source="answer extraction")

    def __call__(self, text: str) -> str | None:
        if not isinstance(text, str):
            raise InputDataError(f"answer extraction expects a string, found {type(text).__name__}")
        kind = self.kind
        if kind == "auto":
            kind = "boxed" if _BOXED.search(text) else "number"
        if kind == "number":
            return extract_number(text)
        if kind == "choice":
            return extract_choice(text, self.choices)
        if kind == "yesno":
            return extract_yesno(text)
        if kind == "boxed":
            return extract_boxed(text)
        if kind == "phrase":
            return extract_phrase(text)
        if kind == "text":
            return extract_text(text)
        return extract_regex(text, re.compile(self.pattern or ""))


def extract_answer(
    text: str, kind: str = "auto", *, pattern: str | None = None, choices: str = "ABCDE"
) -> str | None:
    """The normalised final answer of ``text`` (see the module docstring for each ``kind``), or None."""
    return AnswerExtractor(kind, pattern, choices)(text)
