"""How many prompt windows go into one forward pass, and what happens when a batch does not fit in GPU memory.

* :func:`plan_batch_size`: on a GPU, as many windows as the free memory holds (KV cache of the layers that run plus
  the widest activations, with a safety margin), capped; on a CPU one window at a time, where padding costs more
  than batching saves (docs/design.md).
* :func:`score_in_batches`: runs the batches; on CUDA out-of-memory it halves the batch and retries, down to a single
  window, and only then raises an error that names the window size. Later batches keep the smaller size.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from . import compat

#: Share of the free GPU memory a batch may plan to use (the rest: allocator slack, other tensors).
FREE_MEMORY_SHARE = 0.7
#: Most windows in one batch, whatever the memory says (beyond this, batching gains nothing measurable).
MAX_GPU_BATCH = 64


def bytes_per_window(config, tokens: int, layers_run: int, dtype: torch.dtype) -> int:
    """Estimated peak bytes of one window of ``tokens`` tokens through ``layers_run`` layers.

    The prefix KV cache of every layer that runs, plus one layer's activations (hidden states, MLP), times 1.25.
    """
    config = compat.text_config(config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    per_token = 2 * layers_run * kv_heads * head_dim + 4 * config.hidden_size + 2 * intermediate
    return int(1.25 * tokens * per_token * size)


def plan_batch_size(device: torch.device, config, tokens: int, layers_run: int, dtype: torch.dtype,
                    free_bytes: Optional[int] = None) -> int:
    """Windows per forward pass: 1 on a CPU; on a GPU what ``free_bytes`` (default: the device's free memory) holds."""
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    fits = int(FREE_MEMORY_SHARE * free_bytes // max(1, bytes_per_window(config, tokens, layers_run, dtype)))
    return max(1, min(MAX_GPU_BATCH, fits))


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def score_in_batches(windows: Sequence, size: int, score: Callable[[List], np.ndarray],
                     progress: Callable[[int], None] = lambda n: None, owner: str = "HeadRank") -> Dict[int, np.ndarray]:
    """``{index: scores}`` for every window, scored ``size`` at a time by ``score(list_of_windows)``.

    On out-of-memory the failing batch is split in halves (and the rest of the run uses the smaller size); a single
    window that does not fit raises a ``RuntimeError`` naming its length in tokens.
    """
    results: Dict[int, np.ndarray] = {}
    start = 0
    while start < len(windows):
        batch = list(range(start, min(start + size, len(windows))))
        try:
            rows = score([windows[i] for i in batch])
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_out_of_memory(err):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise RuntimeError(f"{owner}: out of memory on a single prompt window of {len(windows[batch[0]])} "
                                   f"tokens; lower max_window_tokens or max_passage_tokens, or use a device with "
                                   f"more memory") from err
            size = max(1, len(batch) // 2)
            continue
        for i, row in zip(batch, rows):
            results[i] = row
        progress(len(batch))
        start += len(batch)
    return results
