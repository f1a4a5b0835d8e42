"""Fitted HeadRank rerankers on the Hugging Face hub: :func:`upload` and :func:`download` move a saved folder
(:mod:`~pyterrier_headrank.folder`) as a PyTerrier artifact package; ``HeadRank.to_hf`` and ``HeadRank.from_hf``
call them.

:func:`download` gets the artifact class, :class:`~pyterrier_headrank.artifact.HeadRankArtifact`, from PyTerrier,
which finds it through the ``pyterrier.artifact`` entry point; this module does not import it, so that it stays below
the reranker.
"""
from __future__ import annotations

import os
import tempfile

import pyterrier as pt

from .folder import ARTIFACT_FORMAT, ARTIFACT_TYPE, save


def upload(reranker, repo: str, **kwargs) -> None:
    """Save ``reranker`` to a temporary folder and upload it as a PyTerrier artifact package (needs network); the
    folder's ``pt_meta.json`` tells PyTerrier what it holds."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save(reranker, os.path.join(tmp, "headrank"))
        pt.Artifact(folder).to_hf(repo, **kwargs)


def download(repo: str, **overrides):
    """Download (once, into PyTerrier's artifact cache) a reranker uploaded with :func:`upload`; returns the
    artifact that PyTerrier loads it as (:class:`~pyterrier_headrank.artifact.HeadRankArtifact`)."""
    try:
        artifact = pt.Artifact.from_hf(repo, **overrides)
    except (OSError, ValueError) as err:
        raise OSError(f"HeadRank: could not fetch '{repo}' from the Hugging Face hub ({type(err).__name__}: {err}). "
                      f"Without network, download the artifact elsewhere and pass its folder to "
                      f"HeadRank.from_pretrained.") from err
    found = (getattr(artifact, "ARTIFACT_TYPE", None), getattr(artifact, "ARTIFACT_FORMAT", None))
    if found != (ARTIFACT_TYPE, ARTIFACT_FORMAT):
        raise ValueError(f"HeadRank: '{repo}' is a {type(artifact).__name__}, not a HeadRank reranker")
    return artifact
