"""SciFact through ir_datasets, offline: the shared copy placed where ir_datasets expects its download.

A developer's helper (the main job's ``--source irds`` and ``tests/test_data.py`` use it), not part of the package:
it writes, from the shared copy, the ``source.zip`` that ir_datasets would have downloaded (BEIR's layout:
``scifact/corpus.jsonl``, ``scifact/queries.jsonl`` with the queries of both splits, ``scifact/qrels/{test,train}.tsv``)
to the path ir_datasets reads it from, ``$IR_DATASETS_HOME/beir/scifact/source.zip``. ir_datasets 0.6.3 uses a file
already at that path as is (no checksum), and derives its docstore and query/qrels caches from it; so
``get_collection("beir/scifact/test", source="irds")`` then runs ir_datasets' own code on local files.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
import zipfile
from typing import Optional

from pyterrier_headrank.data import SharedCollection, irds_id_of

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


def place_for(name: str) -> None:
    """Before ``get_collection(name, source="irds")``: place the shared SciFact copy when ``name`` is SciFact (a shared
    name or its ir_datasets id) and the copy is there; anything else is left to ir_datasets."""
    if irds_id_of(name) in BEIR_SCIFACT_IDS:
        try:
            place_beir_scifact()
        except FileNotFoundError:
            pass  # no shared copy: ir_datasets downloads it
