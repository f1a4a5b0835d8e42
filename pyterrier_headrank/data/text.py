"""Passage text for result frames: how a document's fields become one text, and a docno -> text transformer.

Rerankers read a ``text`` column; first-stage retrievers return only docnos. :class:`TextLoader` fills the column
from any lookup (a dict built from a small corpus, or an ir_datasets docstore for a large one).
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Mapping, Sequence, Union

import pandas as pd
import pyterrier as pt

#: docnos -> a mapping that holds (at least) those of them that exist
Lookup = Callable[[Sequence[str]], Mapping[str, str]]


def join_title(title, text) -> str:
    """``title text`` (as BEIR and ir_datasets' ``default_text`` do), unless the text already starts with its title.

    Some classic collections (Cranfield) repeat the title as the first sentence of the text; joining it again would
    only duplicate words, so the text is kept as it is there.
    """
    title = (title or "").strip()
    text = text or ""
    if not title or text.lstrip().startswith(title):
        return text
    return f"{title} {text}" if text else title


def check_fields(fields: Union[str, List[str]], available: Iterable[str] = ("text",)) -> List[str]:
    """Normalise the ``fields`` argument of ``text_loader`` (``'*'``, a name or a list) against what is available."""
    available = list(available)
    wanted = available if fields == "*" else [fields] if isinstance(fields, str) else list(fields)
    missing = [f for f in wanted if f not in available]
    if missing:
        raise ValueError(f"text_loader: unknown field(s) {missing}; this collection provides {available}")
    return wanted


class TextLoader(pt.Transformer):
    """Add a text column to a frame that has ``docno``, looking each docno up once.

    Unknown docnos raise a ``KeyError`` (a reranker fed empty passages would silently score them); pass
    ``missing="empty"`` to keep such rows with an empty text instead.
    """

    schematic = {"label": "TextLoader"}

    def __init__(self, lookup: Lookup, name: str = "collection", field: str = "text", missing: str = "raise"):
        if missing not in ("raise", "empty"):
            raise ValueError("TextLoader: missing must be 'raise' or 'empty'")
        self.lookup = lookup
        self.name = name
        self.field = field
        self.missing = missing

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        if "docno" not in inp.columns:
            raise ValueError(f"TextLoader: the input needs a 'docno' column; it has {list(inp.columns)}")
        docnos = inp["docno"].astype(str)
        unique = list(dict.fromkeys(docnos))
        found = self.lookup(unique) if unique else {}
        absent = [d for d in unique if d not in found]
        if absent and self.missing == "raise":
            raise KeyError(f"TextLoader: {len(absent)} docno(s) not in {self.name}, e.g. {absent[:5]}")
        out = inp.copy()
        out[self.field] = docnos.map(lambda d: found.get(d, "")).astype(object)
        return out

    def fuse_rank_cutoff(self, k: int):
        return pt.RankCutoff(k) >> self

    def __repr__(self) -> str:
        return f"TextLoader({self.name!r})"
