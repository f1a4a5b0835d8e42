"""The ir_datasets route: any ir_datasets id through ``pt.get_dataset('irds:...')``.

ir_datasets downloads what an id needs (network). A checkout exercises this same route offline on SciFact by first
placing the shared copy where ir_datasets expects its download (``examples/irds_offline.py``).
"""
from __future__ import annotations

from typing import Iterator, Optional

import pandas as pd
import pyterrier as pt

from ..frames import add_ranks
from .text import TextLoader, check_fields, join_title


def without_irds_prefix(name: str) -> str:
    """``name`` without PyTerrier's ``irds:`` prefix (both spellings name the same ir_datasets id)."""
    return name[len("irds:"):] if name.startswith("irds:") else name


def _doc_text(doc) -> str:
    """One text per ir_datasets document: title and text joined where both exist, else its default text."""
    fields = doc._fields
    if "text" in fields:
        return join_title(getattr(doc, "title", ""), doc.text)
    return doc.default_text()


class IrdsCollection(pt.datasets.Dataset):
    """An ir_datasets dataset in the same shape as :class:`SharedCollection` (docno, text with the title joined)."""

    def __init__(self, irds_id: str):
        self.irds_id = without_irds_prefix(irds_id)
        self.name = self.irds_id
        self.dataset = pt.get_dataset(f"irds:{self.irds_id}")

    @property
    def irds(self):
        return self.dataset.irds_ref()

    def get_topics(self, variant: Optional[str] = None) -> pd.DataFrame:
        topics = self.dataset.get_topics(variant)
        if "query" not in topics.columns:
            raise ValueError(f"{self!r}: queries have several fields {list(topics.columns)}; pick one with "
                             f"get_topics(variant=FIELD)")
        return topics[["qid", "query"]].astype({"qid": str})

    def get_qrels(self, variant: Optional[str] = None) -> pd.DataFrame:
        qrels = self.dataset.get_qrels(variant)
        return qrels[["qid", "docno", "label"]].astype({"qid": str, "docno": str, "label": "int64"})

    def get_corpus_iter(self, *, verbose: bool = False) -> Iterator[dict]:
        it = ({"docno": doc.doc_id, "text": _doc_text(doc)} for doc in self.irds.docs_iter())
        if verbose:
            it = pt.tqdm(it, desc=f"{self.irds_id} documents", unit="doc", total=self.irds.docs_count())
        return it

    def get_corpus_lang(self):
        return self.dataset.get_corpus_lang()

    def get_results(self, variant: Optional[str] = None) -> pd.DataFrame:
        """The dataset's scored documents (where it ships a run), with query and text: PyTerrier result shape."""
        if not self.irds.has_scoreddocs():
            raise NotImplementedError(f"{self!r} ships no first-stage run")
        run = self.dataset.get_results(variant).astype({"qid": str, "docno": str})
        run = add_ranks(run).merge(self.get_topics(), on="qid", how="left")
        return self.text_loader()(run)

    def text_loader(self, fields="text", *, verbose: bool = False, missing: str = "raise") -> TextLoader:
        """Texts looked up in ir_datasets' docstore (no full pass over a large corpus); ``verbose`` is accepted for
        PyTerrier's text-loader protocol and unused."""
        (field,) = check_fields(fields)

        def lookup(docnos):
            return {doc_id: _doc_text(doc) for doc_id, doc in self.irds.docs_store().get_many(docnos).items()}
        return TextLoader(lookup, name=self.irds_id, field=field, missing=missing)

    def fingerprint(self) -> str:
        return "irds"

    def __repr__(self) -> str:
        return f"IrdsCollection({self.irds_id!r})"
