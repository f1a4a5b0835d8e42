"""``HeadRankCache``: a persistent score cache that is correct for listwise rerankers (:mod:`.transformer`); the key
of a candidate list (:mod:`.keys`) and the sqlite store (:mod:`.store`)."""
from .keys import HeadRankCacheError, candidate_list_key, scorer_fingerprint
from .store import ScoreStore
from .transformer import HeadRankCache

__all__ = ["HeadRankCache", "HeadRankCacheError", "ScoreStore", "candidate_list_key", "scorer_fingerprint"]
