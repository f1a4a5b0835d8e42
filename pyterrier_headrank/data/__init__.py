"""Named IR collections as PyTerrier datasets, offline from the shared folder or online through ir_datasets.

>>> collection = get_collection("beir/scifact/test")      # the shared copy when present, else ir_datasets
>>> topics, qrels = collection.get_topics(), collection.get_qrels()
>>> pipeline = bm25 % 20 >> collection.text_loader() >> HeadRank()

Names: the shared sets (``beir-scifact``, ``beir-scifact/train``, ``dl21-passage-bm25top100``, ``cranfield``,
``vaswani``, ``cacm``, ``cisi``), the ir_datasets ids they copy, or any other ir_datasets id (``irds:`` prefix
optional).
"""
from __future__ import annotations

from typing import Union

from .irds import IrdsCollection, without_irds_prefix
from .shared import IRDS_TO_SHARED, SHARED_ENV, SHARED_SPECS, SharedCollection, SharedSpec, data_dir, shared_dir
from .text import TextLoader, join_title

Collection = Union[SharedCollection, IrdsCollection]
SOURCES = ("auto", "shared", "irds")


def shared_name(name: str) -> Union[str, None]:
    """The shared set behind ``name`` (a shared name or the ir_datasets id of one), else None."""
    key = without_irds_prefix(name)
    if key in SHARED_SPECS:
        return key
    return IRDS_TO_SHARED.get(key)


def irds_id_of(name: str) -> Union[str, None]:
    """The ir_datasets id behind ``name``: for a shared name the id its copy comes from (None for a set that exists
    only as a local copy), else ``name`` itself without its ``irds:`` prefix."""
    local, key = shared_name(name), without_irds_prefix(name)
    if local is not None and key == local:
        return SHARED_SPECS[local].irds_id
    return key


def get_collection(name: str, source: str = "auto") -> Collection:
    """Load a collection by name.

    ``source="auto"`` serves a shared set from its local copy when the files are there, and goes to ir_datasets
    otherwise (which needs network unless ir_datasets already has the files). ``"shared"`` insists on the local copy
    (``FileNotFoundError`` if absent). ``"irds"`` goes through ir_datasets.
    """
    if source not in SOURCES:
        raise ValueError(f"get_collection: source must be one of {SOURCES}, got {source!r}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"get_collection: name must be a non-empty string, got {name!r}")
    name = name.strip()
    local, irds_id = shared_name(name), irds_id_of(name)
    if source == "shared" or (source == "auto" and local is not None):
        if local is None:
            raise KeyError(f"get_collection: {name!r} has no local copy; shared sets: {', '.join(SHARED_SPECS)}")
        try:
            return SharedCollection(local)
        except FileNotFoundError:
            if source == "shared" or irds_id is None:
                raise
    if irds_id is None:
        raise KeyError(f"get_collection: {name!r} exists only as a local copy (ir_datasets has no such id)")
    return IrdsCollection(irds_id)


__all__ = ["get_collection", "shared_name", "irds_id_of", "Collection", "SharedCollection", "SharedSpec", "IrdsCollection",
           "TextLoader", "join_title", "shared_dir", "data_dir",
           "SHARED_SPECS", "IRDS_TO_SHARED", "SHARED_ENV"]
