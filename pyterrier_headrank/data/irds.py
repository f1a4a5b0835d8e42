"""The ir_datasets route: any ir_datasets id through ``pt.get_dataset('irds:...')``, and SciFact placed offline.

With network, ir_datasets downloads what an id needs. Without it, ``beir/scifact/test`` and ``beir/scifact/train``
still work: :func:`place_beir_scifact` writes, from the shared copy, the ``source.zip`` that ir_datasets would have
downloaded (BEIR's layout: ``scifact/corpus.jsonl``, ``scifact/queries.jsonl`` with the queries of both splits,
``scifact/qrels/{test,train}.tsv``) to the path ir_datasets reads it from,
``$IR_DATASETS_HOME/beir/scifact/source.zip``.
ir_datasets 0.6.3 uses a file already at that path as is (no checksum), and derives its docstore and query/qrels
caches from it.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
import zipfile
from typing import Iterator, Optional

import pandas as pd
import pyterrier as pt

from ..frames import add_ranks
from .shared import SharedCollection
from .text import TextLoader, check_fields, join_title

BEIR_SCIFACT_IDS = ("beir/scifact/test", "beir/scifact/train")


def beir_scifact_source_path() -> pathlib.Path:
    """Where ir_datasets looks for SciFact's ``source.zip``.

    ir_datasets fixes its dataset paths when it is first imported, from ``$IR_DATASETS_HOME`` at that moment; the
    path is read back from the registered dataset so that a later change of the variable cannot misplace the file.
    """
    import ir_datasets

    try:
        download = ir_datasets.load("beir/scifact/test").qrels_handler()._qrels_dlc._streamer.dlc
        return pathlib.Path(download.path(force=False))
    except AttributeError:  # another ir_datasets layout: fall back on the documented default
        return ir_datasets.util.home_path() / "beir" / "scifact" / "source.zip"


def place_beir_scifact(root: Optional[pathlib.Path] = None, overwrite: bool = False) -> pathlib.Path:
    """Build SciFact's ``source.zip`` for ir_datasets from the shared copy in ``root`` (default: the shared data
    folder), once; return its path.

    The zip is written next to its final path and renamed into place, so a reader never sees half a file.
    """
    target = beir_scifact_source_path()
    if target.is_file() and not overwrite:
        return target
    test, train = SharedCollection("beir-scifact", root), SharedCollection("beir-scifact/train", root)
    queries = []  # BEIR ships one queries.jsonl for all splits; the qrels of a split pick its queries
    for split in (test, train):
        queries += split.split_file("queries", "jsonl").read_text(encoding="utf-8").splitlines()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="source.", suffix=".zip.tmp", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(test.corpus_path, "scifact/corpus.jsonl")
            z.writestr("scifact/queries.jsonl", "".join(line + "\n" for line in queries if line.strip()))
            z.write(test.split_file("qrels", "tsv"), "scifact/qrels/test.tsv")
            z.write(train.split_file("qrels", "tsv"), "scifact/qrels/train.tsv")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _doc_text(doc) -> str:
    """One text per ir_datasets document: title and text joined where both exist, else its default text."""
    fields = doc._fields
    if "text" in fields:
        return join_title(getattr(doc, "title", ""), doc.text)
    return doc.default_text()


class IrdsCollection(pt.datasets.Dataset):
    """An ir_datasets dataset in the same shape as :class:`SharedCollection` (docno, text with the title joined)."""

    def __init__(self, irds_id: str):
        self.irds_id = irds_id[len("irds:"):] if irds_id.startswith("irds:") else irds_id
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
