"""The offline copies of real test collections in the shared folder, as PyTerrier datasets.

The shared folder (``$HEADRANK_SHARED``; ``../shared`` beside the project root in a checkout) holds every set in one layout:
``corpus.jsonl``, ``queries[_train].jsonl``, ``qrels[_train].tsv``, a first-stage ``run.*.txt`` and, for candidate
sets, ``candidates.jsonl`` (see ``shared/data/README.md``). :class:`SharedCollection` reads them into frames in
PyTerrier shape (qid, query / qid, docno, label / qid, docno, score, rank) with string ids.
"""
from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Iterator, Optional

import pandas as pd
import pyterrier as pt

from .text import TextLoader, check_fields, join_title

SHARED_ENV = "HEADRANK_SHARED"


def shared_dir() -> Optional[pathlib.Path]:
    """The shared folder that ``$HEADRANK_SHARED`` names, else ``None``. (A checkout of the project points it at
    ``../shared`` in its Makefile, tests, examples and benchmarks; an installed package guesses nothing.)"""
    return pathlib.Path(os.environ[SHARED_ENV]) if os.environ.get(SHARED_ENV) else None


def data_dir() -> pathlib.Path:
    """Where the collections are: ``<shared>/data``."""
    shared = shared_dir()
    if shared is None:
        raise FileNotFoundError(f"no shared data folder: set ${SHARED_ENV} to it")
    return shared / "data"


@dataclass(frozen=True)
class SharedSpec:
    """One collection (and split) of the shared folder.

    ``suffix`` picks the split's files (``""`` for test, ``"_train"`` for train); ``irds_id`` is the ir_datasets id
    the set is a copy of (None where ir_datasets has no such set); ``run`` is the shipped first-stage run file.
    """

    name: str
    folder: str
    irds_id: Optional[str] = None
    suffix: str = ""
    run: Optional[str] = None
    candidates: bool = False


SHARED_SPECS: Dict[str, SharedSpec] = {spec.name: spec for spec in (
    SharedSpec("beir-scifact", "beir-scifact", "beir/scifact/test", run="run.bm25.pyserini-flat.txt"),
    SharedSpec("beir-scifact/train", "beir-scifact", "beir/scifact/train", suffix="_train"),
    SharedSpec("dl21-passage-bm25top100", "dl21-passage-bm25top100", "msmarco-passage-v2/trec-dl-2021/judged",
               candidates=True),
    SharedSpec("dl21-passage-rm3-top100", "dl21-passage-rm3-top100", candidates=True),
    SharedSpec("dl21-passage-spladepp-top100", "dl21-passage-spladepp-top100", candidates=True),
    SharedSpec("cranfield", "cranfield", "cranfield", run="run.simple-bm25.txt"),
    SharedSpec("vaswani", "vaswani", "vaswani", run="run.simple-bm25.txt"),
    SharedSpec("cacm", "cacm", run="run.simple-bm25.txt"),
    SharedSpec("cisi", "cisi", run="run.simple-bm25.txt"),
)}

#: ir_datasets id -> the name of its local copy.
IRDS_TO_SHARED: Dict[str, str] = {spec.irds_id: spec.name for spec in SHARED_SPECS.values() if spec.irds_id}


def _read_jsonl(path: pathlib.Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class SharedCollection(pt.datasets.Dataset):
    """A collection of the shared folder: topics, qrels, corpus, shipped first-stage run and a text loader."""

    def __init__(self, name: str, root: Optional[pathlib.Path] = None):
        if name not in SHARED_SPECS:
            raise KeyError(f"unknown shared collection {name!r}; known: {', '.join(SHARED_SPECS)}")
        self.spec = SHARED_SPECS[name]
        self.name = name
        self.irds_id = self.spec.irds_id
        self.folder = pathlib.Path(root if root is not None else data_dir()) / self.spec.folder
        missing = [p.name for p in self._required() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"shared collection {name!r}: {', '.join(missing)} missing from {self.folder} "
                                    f"(set ${SHARED_ENV} to the shared folder)")

    # ---- files ------------------------------------------------------------------------------------------------
    def split_file(self, stem: str, ext: str) -> pathlib.Path:
        """``<stem><split suffix>.<ext>`` in the collection's folder, e.g. ``queries_train.jsonl``."""
        return self.folder / f"{stem}{self.spec.suffix}.{ext}"

    def _required(self):
        text = self.folder / ("candidates.jsonl" if self.spec.candidates else "corpus.jsonl")
        return [self.split_file("queries", "jsonl"), self.split_file("qrels", "tsv"), text]

    @property
    def corpus_path(self) -> pathlib.Path:
        return self.folder / "corpus.jsonl"

    # ---- PyTerrier dataset API -------------------------------------------------------------------------------
    def get_topics(self, variant: Optional[str] = None) -> pd.DataFrame:
        """``qid, query`` for every query of the split (some classic sets have unjudged queries, kept here)."""
        if variant is not None:
            raise ValueError(f"{self!r}: no topic variants; pick the split by name (e.g. 'beir-scifact/train')")
        rows = [(str(q["_id"]), q["text"]) for q in _read_jsonl(self.split_file("queries", "jsonl"))]
        return pd.DataFrame(rows, columns=["qid", "query"])

    def get_qrels(self, variant: Optional[str] = None) -> pd.DataFrame:
        """``qid, docno, label`` (graded where the set is graded)."""
        if variant is not None:
            raise ValueError(f"{self!r}: no qrels variants")
        qrels = pd.read_csv(self.split_file("qrels", "tsv"), sep="\t", dtype={"query-id": str, "corpus-id": str})
        qrels = qrels.rename(columns={"query-id": "qid", "corpus-id": "docno", "score": "label"})
        qrels["label"] = qrels["label"].astype("int64")
        return qrels[["qid", "docno", "label"]]

    def get_corpus_iter(self, *, verbose: bool = False) -> Iterator[dict]:
        """``{"docno", "text"}`` per document, the title joined before the text (:func:`join_title`)."""
        it = ({"docno": str(d["_id"]), "text": join_title(d.get("title"), d.get("text"))}
              for d in _read_jsonl(self.corpus_path))
        if verbose:
            it = pt.tqdm(it, desc=f"{self.name} documents", unit="doc")
        return it

    def get_corpus_lang(self) -> str:
        return "en"

    def get_topics_lang(self) -> str:
        return "en"

    def get_results(self, variant: Optional[str] = None) -> pd.DataFrame:
        """The shipped first-stage run as a result frame: ``qid, query, docno, score, rank, text``.

        For a candidate set (DL21) this is the candidate list, which is its BM25 top-100.
        """
        if self.spec.candidates:
            return self.get_candidates()
        if self.spec.run is None:
            raise NotImplementedError(f"{self!r} ships no first-stage run")
        run = pd.read_csv(self.folder / self.spec.run, sep=r"\s+", header=None, dtype={0: str, 2: str},
                          names=["qid", "Q0", "docno", "rank", "score", "tag"])
        run = run[["qid", "docno", "score", "rank"]].astype({"score": "float64", "rank": "int64"})
        run["rank"] -= 1  # PyTerrier ranks start at 0; TREC runs at 1
        run = run.merge(self.get_topics(), on="qid", how="left")
        run = self.text_loader()(run)
        run = run[["qid", "query", "docno", "score", "rank", "text"]]
        return run.sort_values(["qid", "rank"]).reset_index(drop=True)

    def get_candidates(self) -> pd.DataFrame:
        """The candidate lists of a candidate set: ``qid, query, docno, score, rank, text`` (rank from 0)."""
        if not self.spec.candidates:
            raise NotImplementedError(f"{self!r} is a full collection; it has no candidates.jsonl")
        frame = pd.DataFrame(list(_read_jsonl(self.folder / "candidates.jsonl")))
        frame = frame.astype({"qid": str, "docno": str, "score": "float64", "rank": "int64"})
        frame["rank"] -= 1
        return frame[["qid", "query", "docno", "score", "rank", "text"]]

    # ---- text -------------------------------------------------------------------------------------------------
    @cached_property
    def documents(self) -> Dict[str, str]:
        """docno -> text for the whole corpus (the shared sets are small: at most a few MB)."""
        return {d["docno"]: d["text"] for d in self.get_corpus_iter()}

    def text_loader(self, fields="text", *, verbose: bool = False, missing: str = "raise") -> TextLoader:
        """A transformer adding ``text`` to a frame with ``docno``; ``pt.text.get_text(collection)`` also works.

        ``verbose`` is accepted for PyTerrier's text-loader protocol; lookups are in memory, with nothing to report.
        """
        (field,) = check_fields(fields)
        return TextLoader(lambda docnos: self.documents, name=self.name, field=field, missing=missing)

    def fingerprint(self) -> str:
        """Changes when the corpus file changes: a cache key for indexes built over this collection."""
        stat = self.corpus_path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    def __repr__(self) -> str:
        return f"SharedCollection({self.name!r})"
