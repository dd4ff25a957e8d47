"""Crowd voting: pick the candidate most similar to all others; answer extraction for self-consistency.

No torch import here: only the ``embedding`` similarity loads sentence-transformers, lazily.
"""

from lmfuse.vote.crowd import VoteResult, vote, vote_batch
from lmfuse.vote.extract import KINDS, AnswerExtractor, canonical_number, extract_answer
from lmfuse.vote.similarity import Similarity, get_similarity, register_similarity, similarity_names

__all__ = [
    "KINDS", "AnswerExtractor", "Similarity", "VoteResult", "canonical_number", "extract_answer",
    "get_similarity", "register_similarity", "similarity_names", "vote", "vote_batch",
]  # fmt: skip
