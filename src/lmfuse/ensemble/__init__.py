"""Token-level probability ensemble: several causal LMs decode as one (``lmfuse ensemble``).

``Ensemble(members, weights, combine)`` with ``generate``, ``generate_ids``, ``score`` and, for servers,
``complete`` / ``stream`` (``Completion``, ``Chunk``: finish reasons, token counts, log-probs); members may
share a tokenizer (token ids committed) or not (aligned by the bytes their tokens decode to).
"""

from lmfuse.ensemble.combine import COMBINE
from lmfuse.ensemble.complete import Chunk, Completion
from lmfuse.ensemble.ensemble import Ensemble, GenerationStats, ScoreResult

__all__ = ["COMBINE", "Chunk", "Completion", "Ensemble", "GenerationStats", "ScoreResult"]
