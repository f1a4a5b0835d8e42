"""The listwise prompt: passages first, the query last (the ICR layout), with exact token spans.

The prompt is split into a *prefix* (chat template start, instruction, numbered passages, ``Query: ``) and a
*suffix* (the query, a closing line and the template's end). The prefix is shared by the real query and the
content-free calibration query, so its keys and values are computed once and reused. Spans come from the tokenizer's
character offsets, so they are exact for any tokenizer with offsets (all fast tokenizers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

Span = Tuple[int, int]

_MARK = "\u2063HEADRANK\u2063"
DEFAULT_INSTRUCTION = "Here are {n} passages, each marked with a number in brackets. Read them, then read the query."
DEFAULT_FOOTER = "\nWhich passages answer the query?"
CALIBRATION_QUERY = "N/A"


@dataclass
class QueryPart:
    """Token ids of a suffix and the [start, end) span of the query text in it."""

    ids: List[int]
    span: Span


@dataclass
class Window:
    """One prompt: the prefix ids, each passage's token span in the prefix, and the suffixes to score with."""

    prefix_ids: List[int]
    passage_spans: List[Span]
    query: QueryPart
    calibration: QueryPart

    @property
    def num_passages(self) -> int:
        return len(self.passage_spans)

    def __len__(self) -> int:
        return len(self.prefix_ids) + len(self.query.ids)


def _spans_from_offsets(offsets: Sequence[Tuple[int, int]], char_spans: Sequence[Span]) -> List[Span]:
    """Token span of each character span: the tokens whose characters overlap it (empty spans stay empty).

    ``char_spans`` must be sorted and disjoint (passages in prompt order); one pass over the tokens.
    """
    result: List[Span] = []
    token = 0
    for start, end in char_spans:
        if end <= start:
            result.append((0, 0))
            continue
        while token < len(offsets) and (offsets[token][1] <= start or offsets[token][1] <= offsets[token][0]):
            token += 1
        first = token
        while token < len(offsets) and offsets[token][0] < end:
            token += 1
        result.append((first, token) if token > first else (0, 0))
    return result


class ListwisePrompt:
    """Builds HeadRank's prompts for one tokenizer.

    ``max_passage_tokens`` cuts each passage at a token boundary; ``max_query_tokens`` does the same for the query.
    """

    def __init__(self, tokenizer, max_passage_tokens: int = 128, max_query_tokens: int = 64,
                 instruction: str = DEFAULT_INSTRUCTION, footer: str = DEFAULT_FOOTER,
                 calibration_query: str = CALIBRATION_QUERY):
        if not getattr(tokenizer, "is_fast", True):
            raise ValueError("HeadRank: needs a fast tokenizer (one that returns character offsets)")
        self.tokenizer = tokenizer
        self.max_passage_tokens = int(max_passage_tokens)
        self.max_query_tokens = int(max_query_tokens)
        self.instruction = instruction
        self.footer = footer
        self.template_start, self.template_end = self._template_parts()
        self.calibration = self.query_part(calibration_query)

    def _template_parts(self) -> Tuple[str, str]:
        """Text of the chat template before and after the user message (thinking off for Qwen3)."""
        if getattr(self.tokenizer, "chat_template", None):
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": _MARK}], tokenize=False, add_generation_prompt=True,
                enable_thinking=False,
            )
            if isinstance(rendered, str) and rendered.count(_MARK) == 1:
                start, end = rendered.split(_MARK)
                return start, end
        bos = self.tokenizer.bos_token or ""
        return bos, "\n"

    def _encode(self, text: str):
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), list(encoded["offset_mapping"])

    def truncate(self, texts: Sequence[str], max_tokens: int) -> Tuple[List[str], List[int]]:
        return truncate(self.tokenizer, texts, max_tokens)

    def truncate_passages(self, texts: Sequence[str]) -> Tuple[List[str], List[int]]:
        return self.truncate(texts, self.max_passage_tokens)

    def query_part(self, query: str) -> QueryPart:
        """The suffix for ``query``: the query text, the footer and the end of the chat template."""
        (query,), _ = self.truncate([query.strip()], self.max_query_tokens)
        text = query + self.footer + self.template_end
        ids, offsets = self._encode(text)
        (span,) = _spans_from_offsets(offsets, [(0, len(query))])
        return QueryPart(ids, span)

    def prefix(self, passages: Sequence[str]) -> Tuple[List[int], List[Span]]:
        """Prefix ids for already truncated passages, and each passage's token span."""
        parts = [self.template_start, self.instruction.format(n=len(passages)), "\n\n"]
        position = sum(len(p) for p in parts)
        char_spans = []
        for number, passage in enumerate(passages, start=1):
            label = f"[{number}] "
            start = position + len(label)
            char_spans.append((start, start + len(passage)))
            parts += [label, passage, "\n"]
            position = start + len(passage) + 1
        parts.append("\nQuery: ")
        ids, offsets = self._encode("".join(parts))
        return ids, _spans_from_offsets(offsets, char_spans)

    def window(self, passages: Sequence[str], query: QueryPart) -> Window:
        ids, spans = self.prefix(passages)
        return Window(ids, spans, query, self.calibration)

    def overhead_tokens(self, query: QueryPart) -> int:
        """Tokens of a window that are not passage text (template, instruction, query): for the window budget."""
        return len(self.prefix([])[0]) + len(query.ids)

    #: Upper bound on the tokens that number and separate one passage ("[12] " and a newline).
    PER_PASSAGE_TOKENS = 6


def truncate(tokenizer, texts: Sequence[str], max_tokens: int) -> Tuple[List[str], List[int]]:
    """Cut texts to at most ``max_tokens`` tokens of ``tokenizer`` at a token boundary; return the texts and their
    token counts."""
    if not texts:
        return [], []
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    cut, counts = [], []
    for text, offsets in zip(texts, encoded["offset_mapping"]):
        if len(offsets) > max_tokens:
            text = text[: offsets[max_tokens - 1][1]]
        cut.append(text)
        counts.append(min(len(offsets), max_tokens))
    return cut, counts
