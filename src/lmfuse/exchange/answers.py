"""The one place where ``lmfuse.exchange`` gets its answer extractor: ``lmfuse.vote``'s.

EoT's reference rule for numbers (METHODS.md §1) is ``lmfuse.vote.extract``'s ``number`` kind: the text
after the last "the answer is", commas stripped, first number; without the phrase, the last number.
"""

from __future__ import annotations

from lmfuse.vote.extract import extract_answer

__all__ = ["extract_answer"]
