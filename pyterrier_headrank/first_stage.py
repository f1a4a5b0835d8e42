"""Real BM25 first stage with PISA, over any collection of :mod:`pyterrier_headrank.data`.

The index is built once per (collection, corpus version, stemmer) in a cache folder outside the project
(``$HEADRANK_CACHE``, default ``~/.cache/pyterrier-headrank``) and reused by later runs. It is built in a temporary
folder and renamed into place, so an interrupted build never leaves a half index that later runs would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Union

import pyterrier as pt

from .paths import cache_dir

PISA_HINT = "BM25 needs pyterrier-pisa: `pip install pyterrier-pisa` (or `pip install pyterrier-headrank[pisa]`)."


def _pisa():
    try:
        import pyterrier_pisa
    except ImportError as err:
        raise ImportError(f"{PISA_HINT} ({err})") from err
    return pyterrier_pisa


@contextlib.contextmanager
def _native_output_captured(enabled: bool = True):
    """Hold back what native code writes to stdout/stderr (PISA logs each indexing step and draws progress bars
    there, and this version's ``log_level`` switch is broken); replay it if the block fails, so errors stay visible.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            yield
        except BaseException:
            failed = True
            raise
        else:
            failed = False
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            if failed:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace")[-20000:])


def index_path(collection, stemmer: str = "porter2", cache: Union[None, str, os.PathLike] = None) -> pathlib.Path:
    """The folder of ``collection``'s PISA index: readable name plus a hash of name, corpus version and stemmer."""
    key = f"{collection.name}|{collection.fingerprint()}|{stemmer}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", collection.name).strip("-")
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return pathlib.Path(cache if cache is not None else cache_dir()) / "pisa" / f"{slug}-{stemmer}-{digest}"


def pisa_index(collection, stemmer: str = "porter2", cache: Union[None, str, os.PathLike] = None,
               threads: int = 1, verbose: bool = False):
    """The PISA index of ``collection`` (docno + text), built on first use and reused afterwards."""
    pisa = _pisa()
    path = index_path(collection, stemmer, cache)
    if not pisa.PisaIndex(str(path)).built():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            building = pisa.PisaIndex(str(tmp / "index"), text_field="text", stemmer=stemmer, threads=threads)
            with _native_output_captured(enabled=not verbose):
                building.index(collection.get_corpus_iter(verbose=verbose))
            try:
                os.rename(tmp / "index", path)
            except OSError:
                if not pisa.PisaIndex(str(path)).built():  # not a concurrent build that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return pisa.PisaIndex(str(path), text_field="text", stemmer=stemmer, threads=threads)


def bm25(collection, num_results: int = 100, k1: float = 0.9, b: float = 0.4, stemmer: str = "porter2",
         cache: Union[None, str, os.PathLike] = None, threads: int = 1, verbose: bool = False) -> pt.Transformer:
    """BM25 over ``collection``: queries (qid, query) in, result frame (qid, query, docno, score, rank) out.

    k1=0.9, b=0.4 are the Anserini/Pyserini defaults that BEIR baselines use. Add text for a reranker with
    ``collection.text_loader()``.
    """
    index = pisa_index(collection, stemmer=stemmer, cache=cache, threads=threads, verbose=verbose)
    with _native_output_captured(enabled=not verbose):  # the first use of (k1, b) precomputes its score bounds
        return index.bm25(k1=k1, b=b, num_results=num_results, threads=threads, verbose=verbose)
