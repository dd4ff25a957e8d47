"""Crowd voting: pick the candidate most similar to all others; answer extraction for self-consistency.

No torch import here: only the ``embedding`` similarity loads sentence-transformers, lazily.
"""

from lmfuse.vote.extract import KINDS, AnswerExtractor, canonical_number, extract_answer

__all__ = ["KINDS", "AnswerExtractor", "canonical_number", "extract_answer"]
