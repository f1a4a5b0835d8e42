"""Where each part of a batch of windows sits in HeadRank's single forward pass, and which part may see which.

A row of the batch is ``[left padding | passages | query part | calibration part | right padding]``. The query part
and the content-free calibration part both continue the passages: they carry the same positions (the first one
after the passages), and a mask keeps each from seeing the other. So one pass gives what two prompts
(``passages + query`` and ``passages + "N/A"``) would give, without a KV cache: the passages are computed once, and
no layer's keys and values outlive that layer.

Left padding makes every row's passages end in the same column (:attr:`Layout.prefix_width`): all rows left of it
are ordinary causal rows, and only the few columns right of it (the suffix) need HeadRank's own mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Dict, List, Optional, Sequence

import torch

from .prompt import Window

#: What a column holds.
PASSAGES, QUERY, CALIBRATION, PAD = 0, 1, 2, 3


@dataclass
class Layout:
    """The single-pass batch of some windows, and what to read from it."""

    ids: torch.Tensor            # [B, T] token ids
    valid: torch.Tensor          # [B, T] False on padding
    positions: torch.Tensor      # [B, T] position ids (query and calibration parts both start after the passages)
    parts: torch.Tensor          # [B, T] PASSAGES, QUERY, CALIBRATION or PAD
    prefix_width: int            # columns [0, prefix_width) hold the left-padded passages
    query_weights: torch.Tensor  # [B, R, S]: 1/|text| over the query text (r=0) and calibration text (r=1) of the suffix
    passage_index: torch.Tensor  # [B, T]: passage number of each column, num_passages where none
    num_passages: int
    _masks: Dict[Optional[int], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def rows_per_window(self) -> int:
        """1, or 2 when the calibration part is read too."""
        return self.query_weights.shape[1]

    @property
    def suffix_width(self) -> int:
        return self.ids.shape[1] - self.prefix_width

    @classmethod
    def build(cls, windows: Sequence[Window], calibrate: bool, pad_token_id: int) -> "Layout":
        """Lay out ``windows`` (each with its query part, then its calibration part if ``calibrate``)."""
        suffixes = [(w.query, w.calibration) if calibrate else (w.query,) for w in windows]
        prefix_width = max(len(w.prefix_ids) for w in windows)
        suffix_width = max(sum(len(part.ids) for part in parts) for parts in suffixes)
        shape = (len(windows), prefix_width + suffix_width)
        layout = cls(ids=torch.full(shape, pad_token_id, dtype=torch.long), valid=torch.zeros(shape, dtype=torch.bool),
                     positions=torch.zeros(shape, dtype=torch.long), parts=torch.full(shape, PAD, dtype=torch.long),
                     prefix_width=prefix_width, query_weights=torch.zeros(len(windows), len(suffixes[0]), suffix_width),
                     passage_index=torch.zeros(shape, dtype=torch.long),
                     num_passages=max(w.num_passages for w in windows))
        layout.passage_index.fill_(layout.num_passages)
        for row, (window, parts, offset) in enumerate(zip(windows, suffixes, prefix_offsets(windows))):
            layout._fill_row(row, window, parts, offset)
        return layout

    def _fill_row(self, row: int, window: Window, parts, start: int) -> None:
        length = len(window.prefix_ids)
        self._put(row, start, window.prefix_ids, PASSAGES, first_position=0)
        for j, (a, b) in enumerate(window.passage_spans):
            self.passage_index[row, start + a:start + b] = j
        column = self.prefix_width
        for r, (kind, part) in enumerate(zip((QUERY, CALIBRATION), parts)):
            self._put(row, column, part.ids, kind, first_position=length)
            a, b = part.span
            offset = column - self.prefix_width
            self.query_weights[row, r, offset + a:offset + b] = 1.0 / max(1, b - a)
            column += len(part.ids)

    def _put(self, row: int, column: int, ids, kind: int, first_position: int) -> None:
        end = column + len(ids)
        self.ids[row, column:end] = torch.tensor(ids, dtype=torch.long)
        self.valid[row, column:end] = True
        self.parts[row, column:end] = kind
        self.positions[row, column:end] = torch.arange(first_position, first_position + len(ids))

    def to(self, device) -> "Layout":
        """The same layout with its tensors on ``device``."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved, _masks={})

    def inputs(self, device) -> dict:
        """The decoder's keyword arguments; on CUDA the host tensors are pinned and copied without blocking."""
        tensors = dict(input_ids=self.ids, attention_mask=self.valid.long(), position_ids=self.positions)
        device = torch.device(device)
        if device.type == "cuda":
            return {k: v.pin_memory().to(device, non_blocking=True) for k, v in tensors.items()}
        return {k: v.to(device) for k, v in tensors.items()}

    def suffix_mask(self, sliding_window: Optional[int] = None) -> torch.Tensor:
        """Which columns each suffix column attends to: ``[B, 1, S, T]`` (True: visible).

        A query (or calibration) column sees the passages and the earlier columns of its own part, by position, and
        within ``sliding_window`` positions on a sliding-window layer. A right-padding column sees the passages (its
        output is never read; it only must not be empty, or attention over it would give NaN).
        """
        if sliding_window not in self._masks:
            self._masks[sliding_window] = self._build_suffix_mask(sliding_window)
        return self._masks[sliding_window]

    def _build_suffix_mask(self, sliding_window: Optional[int]) -> torch.Tensor:
        w = self.prefix_width
        q_pos, q_part = self.positions[:, w:, None], self.parts[:, w:, None]
        k_pos, k_part, k_valid = self.positions[:, None, :], self.parts[:, None, :], self.valid[:, None, :]
        visible = k_valid & (k_pos <= q_pos) & ((k_part == PASSAGES) | (k_part == q_part))
        if sliding_window:
            visible = visible & (q_pos - k_pos < sliding_window)
        padding_rows = k_valid & (k_part == PASSAGES) & (q_part == PAD)
        return torch.where(q_part == PAD, padding_rows, visible)[:, None]


def prefix_offsets(windows: Sequence[Window]) -> List[int]:
    """Where each window's passages start in a batch's columns: prefixes are left-padded to the longest one, so a
    window's token ``t`` (of its prefix) is column ``offset + t`` of the batch (and of a readout's ``token_mass``)."""
    width = max(len(w.prefix_ids) for w in windows)
    return [width - len(w.prefix_ids) for w in windows]
