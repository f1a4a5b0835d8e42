"""Reading a ranking out of generated text: ``"[2] > [3] > [1]"`` -> the order ``[1, 2, 0]``.

Small models often break the requested format: they stop early, repeat an identifier, invent one that is not in
the window, or write plain numbers. The parser keeps every valid identifier in the order of its first appearance,
ignores repeats and out-of-range numbers, and appends the passages the output never named in their input order.
An output that names a single passage of a longer window is not an order at all (a small chat model often just
echoes the conversation, e.g. "Received passage [20]."); it is ignored and the window keeps its input order, rather
than moving that one passage to the top. The parser also reports what went wrong, so that a caller can count how
often the output was a full permutation.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Tuple

_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_BARE = re.compile(r"(?<![\d.])(\d+)(?![\d.]*\d)")


@dataclass(frozen=True)
class ParsedPermutation:
    """The order parsed from one output (0-based input positions, always a full permutation) and its defects."""

    order: Tuple[int, ...]
    named: int          # distinct valid identifiers used (0 when the output was ignored)
    repeated: int       # identifiers named again after their first appearance
    out_of_range: int   # numbers outside 1..n
    missing: int        # passages the output never named (appended in input order)

    @property
    def complete(self) -> bool:
        """True when the output named every passage exactly once and nothing else."""
        return self.missing == 0 and self.repeated == 0 and self.out_of_range == 0


def parse_permutation(text: str, n: int, min_named: int = 2) -> ParsedPermutation:
    """Parse generated ``text`` as a ranking of ``n`` passages numbered from 1.

    Identifiers in brackets (``[3]``) are used when the text has any; otherwise bare integers are read
    (``3 > 1 > 2``). Numbers that are part of decimals are never identifiers. An output naming fewer than
    ``min(min_named, n)`` distinct passages is ignored: the input order is kept.
    """
    if n < 0:
        raise ValueError(f"parse_permutation: n must be >= 0, got {n}")
    text = text or ""
    numbers = _BRACKETED.findall(text) or _BARE.findall(text)
    seen: List[int] = []
    taken = set()
    repeated = out_of_range = 0
    for number in numbers:
        position = int(number) - 1
        if not 0 <= position < n:
            out_of_range += 1
        elif position in taken:
            repeated += 1
        else:
            taken.add(position)
            seen.append(position)
    if len(seen) < min(min_named, n):
        seen, taken = [], set()
    rest = [i for i in range(n) if i not in taken]
    return ParsedPermutation(tuple(seen + rest), len(seen), repeated, out_of_range, len(rest))
