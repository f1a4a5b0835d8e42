"""``HeadRankArtifact``: a HeadRank folder as a PyTerrier artifact (type ``reranker``, format ``headrank``).

``pt.Artifact.load(folder)`` and ``pt.Artifact.from_hf(repo)`` find this class through the ``pyterrier.artifact``
entry point; ``HeadRank.from_hf`` goes through it too (:mod:`~pyterrier_headrank.hub`). It stands above the reranker,
which it builds; nothing in the package imports it.
"""
from __future__ import annotations

import pyterrier as pt

from .folder import ARTIFACT_FORMAT, ARTIFACT_TYPE
from .headrank import HeadRank


class HeadRankArtifact(pt.Artifact, pt.Transformer):
    """A HeadRank folder as a PyTerrier artifact; also usable directly as the reranker it holds.

    ``pt.Artifact.load(path)`` returns one of these; :meth:`reranker` gives the :class:`HeadRank`.
    """

    ARTIFACT_TYPE = ARTIFACT_TYPE
    ARTIFACT_FORMAT = ARTIFACT_FORMAT
    ARTIFACT_PACKAGE_HINT = "pyterrier-headrank"

    def __init__(self, path, **overrides):
        pt.Artifact.__init__(self, path)
        self._reranker = HeadRank.from_pretrained(path, **overrides)

    def reranker(self) -> HeadRank:
        return self._reranker

    def transform(self, inp):
        return self._reranker.transform(inp)

    def __repr__(self) -> str:
        return f"HeadRankArtifact({str(self.path)!r})"
