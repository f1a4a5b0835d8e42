"""``ICR``: In-Context Re-ranking (Chen et al., ICLR 2025, arXiv 2410.02642) on HeadRank's attention reader.

ICR scores a passage by the attention that the query tokens pay to its tokens, summed over every head of every
layer, minus the same attention paid by a content-free query ("N/A"). Before summing a passage's tokens it drops
the tokens whose calibrated score falls far below the passage's own mean (below mean - 2 std): tokens that the
content-free query attends to much more than the real one, such as attention sinks, would otherwise dominate.

Compared with HeadRank: the same listwise prompt (passages first, query last) and the same two-call read
(:class:`~pyterrier_headrank.attention.AttentionReader` with ``keep_tokens=True``), but all heads, the full depth,
and the token filter. The whole candidate list goes into one prompt when it fits the model's context; a longer list
is split into HeadRank's shared-anchor windows (ICR itself would slide windows, which it advises against).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..attention import AttentionReader
from ..attention_ranker import AttentionRanker
from ..heads import HeadSet
from ..layout import prefix_offsets
from ..prompt import Window
from ..ranking_settings import RankingSettings

HELP_URL = "https://arxiv.org/abs/2410.02642"


def filtered_calibrated_sum(query_mass: torch.Tensor, calibration_mass: torch.Tensor, filter_tokens: bool = True,
                            num_std: float = 2.0) -> torch.Tensor:
    """ICR's score of one passage from per-token attention mass of the query and of the calibration query.

    Keeps the tokens whose calibrated mass (query minus calibration) exceeds ``mean - num_std * std`` over the
    passage's tokens and sums their calibrated mass. A passage with fewer than two tokens keeps all of them (its
    standard deviation is undefined); an empty passage scores 0.
    """
    calibrated = query_mass.double() - calibration_mass.double()
    if calibrated.numel() == 0:
        return calibrated.new_zeros(())
    if not filter_tokens or calibrated.numel() < 2:
        return calibrated.sum()
    threshold = calibrated.mean() - num_std * calibrated.std()
    return calibrated[calibrated > threshold].sum()


class ICR(AttentionRanker):
    """In-Context Re-ranking: calibrated, token-filtered attention of all heads of all layers.

    A plain PyTerrier transformer: training-free, nothing to fit or save.

    Args:
        model: an alias (``smollm2-135m``, ``qwen3-0.6b``, ...), a hub id, a folder, a ``.gguf`` file, or a loaded
            ``transformers`` causal LM (then also pass ``tokenizer``).
        calibrate: subtract the attention of the content-free query "N/A" (ICR's calibration); ``False`` gives
            ICR's uncalibrated variant (plain attention mass, no token filter).
        token_filter: drop tokens whose calibrated score is below mean - 2 std of their passage.
        max_window_tokens: the prompt budget; ``None`` for the model's context length, so that the whole list fits
            in one prompt whenever it can.
        Other arguments as for :class:`~pyterrier_headrank.HeadRank`.
    """

    def __init__(self, model="smollm2-135m", *, tokenizer=None, calibrate: bool = True, token_filter: bool = True,
                 text_field: str = "text", batch_size: int = 4, max_passage_tokens: int = 128,
                 max_query_tokens: int = 64, max_window_tokens=None, max_window_passages: int = 1000,
                 n_anchors: int = 3, device=None, dtype="auto", verbose: bool = False):
        super().__init__(model, None, tokenizer=tokenizer, settings=RankingSettings.pick(locals()))
        self.token_filter = bool(token_filter)

    def scoring_settings(self) -> dict:
        return {**super().scoring_settings(), "token_filter": self.token_filter}

    def _default_heads(self, num_layers: int, num_heads: int) -> HeadSet:
        return HeadSet.all_heads(num_layers, num_heads)

    def window_scores(self, reader: AttentionReader, windows: Sequence[Window], heads: HeadSet,
                      weights: Optional[torch.Tensor] = None) -> np.ndarray:
        weights = torch.tensor(heads.weights) if weights is None else weights
        if not self.calibrate:  # the uncalibrated variant: plain attention mass per passage
            return super().window_scores(reader, windows, heads, weights)
        readout = reader.read(windows, heads, calibrate=True, keep_tokens=True)
        weights = weights.to(readout.token_mass)
        query = torch.einsum("bhk,h->bk", readout.token_mass, weights).cpu()  # summed over all heads and layers
        calibration = torch.einsum("bhk,h->bk", readout.calibration_token_mass, weights).cpu()
        scores = np.zeros((len(windows), max(w.num_passages for w in windows)))
        for b, (window, offset) in enumerate(zip(windows, prefix_offsets(windows))):
            for j, (start, end) in enumerate(window.passage_spans):
                scores[b, j] = float(filtered_calibrated_sum(query[b, offset + start:offset + end],
                                                             calibration[b, offset + start:offset + end],
                                                             self.token_filter))
        return scores

    def schematic(self, *, input_columns=None):
        return {"label": "ICR", "help_url": HELP_URL}

    def __repr__(self) -> str:
        return f"ICR({self.model_name!r})"
