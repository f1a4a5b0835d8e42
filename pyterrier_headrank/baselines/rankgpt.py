"""``RankGPT``: listwise generative reranking with a local chat model (Sun et al., 2023, arXiv 2304.09542).

The model reads a window of numbered passages and writes their order (``[2] > [1] > ...``). A window of 20 slides
from the back of the candidate list to the front with a stride of 10, so that relevant passages move up window by
window. This is the decoding baseline HeadRank is compared with: same models (names resolved by
:func:`~pyterrier_headrank.models.load_model`), same passage truncation, but one generation per window.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pyterrier as pt
import torch

from .. import compat
from ..listwise import ListwiseReranker, QueryPassages
from ..models import check_model_argument, loaded
from ..prompt import truncate
from ..ranking_settings import ListSettings, whole
from .permutation import ParsedPermutation, parse_permutation

HELP_URL = "https://arxiv.org/abs/2304.09542"

# RankGPT's permutation-generation prompt, in our own words with the paper's structure: a multi-turn chat that hands
# the model one passage per turn and then asks for the labels in order, "[2] > [1] > ...".
SYSTEM = "You are an assistant that orders passages by how relevant they are to a search query."
FIRST = ("You will receive {n} passages, each labelled with a number in brackets. \n"
         "Order them by relevance to this query: {query}.")
FIRST_REPLY = "Understood. Send the passages."
PASSAGE_REPLY = "Got passage [{i}]."
LAST = ("Query: {query}. \nOrder the {n} passages above from most to least relevant to the query. "
        "Answer only with their labels joined by ' > ', for example [2] > [1], with no other words.")


def sliding_windows(count: int, window_size: int = 20, stride: int = 10) -> List[Tuple[int, int]]:
    """``[start, end)`` of each window, back to front; the last window always starts at 0.

    For 30 candidates, a window of 20 and a stride of 10: ``[(10, 30), (0, 20)]``. (RankGPT's reference loop
    stops once a window would start below 0, which leaves the head of a list that is not a multiple of the
    stride unranked; here the last window is moved to start at 0 instead.)
    """
    if count <= 0:
        return []
    windows = []
    end = count
    while True:
        start = max(0, end - window_size)
        windows.append((start, end))
        if start == 0:
            return windows
        end -= stride


def rankgpt_messages(query: str, passages: Sequence[str]) -> List[Dict[str, str]]:
    """The chat messages that ask for a ranking of ``passages`` (already truncated) for ``query``."""
    n = len(passages)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": FIRST.format(n=n, query=query)},
                {"role": "assistant", "content": FIRST_REPLY}]
    for i, passage in enumerate(passages, start=1):
        messages.append({"role": "user", "content": f"[{i}] {passage}"})
        messages.append({"role": "assistant", "content": PASSAGE_REPLY.format(i=i)})
    messages.append({"role": "user", "content": LAST.format(n=n, query=query)})
    return messages


@dataclass
class FormatStats:
    """How often generated outputs were usable: counted over every window since the last :meth:`reset`."""

    windows: int = 0
    complete: int = 0     # outputs that named every passage of the window exactly once and nothing else
    missing: int = 0      # passages never named (kept in their input order, after the named ones)
    repeated: int = 0
    out_of_range: int = 0
    outputs: List[str] = field(default_factory=list, repr=False)  # the last few raw outputs, for inspection

    KEEP_OUTPUTS = 20

    def add(self, parsed: ParsedPermutation, text: str) -> None:
        self.windows += 1
        self.complete += int(parsed.complete)
        self.missing += parsed.missing
        self.repeated += parsed.repeated
        self.out_of_range += parsed.out_of_range
        self.outputs = (self.outputs + [text])[-self.KEEP_OUTPUTS:]

    @property
    def success_rate(self) -> float:
        """Share of windows whose output parsed as a full permutation (NaN before any window)."""
        return self.complete / self.windows if self.windows else float("nan")

    def reset(self) -> None:
        self.windows = self.complete = self.missing = self.repeated = self.out_of_range = 0
        self.outputs = []


@dataclass
class _Job:
    list_index: int
    start: int
    end: int
    query: str
    prompt_ids: List[int]


class RankGPT(ListwiseReranker):
    """Rerank candidates by generating their order with a chat LLM, in sliding windows (RankGPT).

    Args:
        model: an alias (``smollm2-135m``, ``qwen3-0.6b``, ...), a hub id, a folder, a ``.gguf`` file, or a loaded
            ``transformers`` causal LM (then also pass ``tokenizer``).
        window_size / stride: passages per window and how far each window moves towards the front.
        text_field: the column holding passage text.
        batch_size: windows generated together; windows of one list run one after another (each depends on the
            previous), so a batch holds windows of different queries.
        max_passage_tokens / max_query_tokens: each passage (the query) is cut to this many tokens.
        max_new_tokens: generation budget per window; ``None`` for 5 tokens per passage plus 8.
        device: ``None`` for CUDA when present, else CPU. dtype: ``"auto"`` for bf16 on GPU, float32 on CPU.
        verbose: show a progress bar.

    Decoding is greedy. The output is parsed leniently (:func:`parse_permutation`); passages it does not name keep
    their order behind the named ones. ``format_stats`` counts how often the output was a full permutation.
    The score of a candidate is ``n - position`` in the final order (higher is better).

    Two public hooks let a subclass change or watch generation: :meth:`generation_config` (the settings of one
    batch's generation) and :meth:`record_output` (called with every window's output).
    """

    settings_class = ListSettings

    def __init__(self, model="smollm2-135m", *, tokenizer=None, text_field: str = "text", window_size: int = 20,
                 stride: int = 10, batch_size: int = 4, max_passage_tokens: int = 128, max_query_tokens: int = 64,
                 max_new_tokens=None, device=None, dtype="auto", verbose: bool = False):
        batch_size = whole(batch_size, "batch_size", "RankGPT")
        self._init_model(model, tokenizer, ListSettings.pick(locals()).checked("RankGPT"))
        self.window_size = whole(window_size, "window_size", "RankGPT")
        self.stride = whole(stride, "stride", "RankGPT")
        self.max_new_tokens = whole(max_new_tokens, "max_new_tokens", "RankGPT", optional=True)
        check_model_argument("RankGPT", model, tokenizer, device, dtype)  # fail now, not at first use
        if self.window_size < 2 or not 1 <= self.stride <= self.window_size:
            raise ValueError(f"RankGPT: need window_size >= 2 and 1 <= stride <= window_size, got "
                             f"window_size={self.window_size}, stride={self.stride}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("RankGPT: max_new_tokens must be >= 1 (or None)")
        self.format_stats = FormatStats()

    def scoring_settings(self) -> dict:
        return {**super().scoring_settings(), "window_size": self.window_size, "stride": self.stride,
                "max_new_tokens": self.max_new_tokens}

    def _load(self):
        """(model, tokenizer), loaded on first use (:meth:`loaded`)."""
        return loaded(self.model, self.tokenizer, self.device, self.dtype, self.verbose)

    # ---- prompting and generation -------------------------------------------------------------------------------
    def _prompt_ids(self, tokenizer, query: str, passages: Sequence[str]) -> List[int]:
        messages = rankgpt_messages(query, passages)
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 enable_thinking=False)
        else:  # a base model: the same turns as plain text
            text = (tokenizer.bos_token or "") + "".join(f"{m['role']}: {m['content']}\n" for m in messages) + \
                "assistant: "
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(self, prompts: Sequence[List[int]], max_new_tokens: int, passages: int) -> List[str]:
        """Greedy continuations of left-padded ``prompts`` (windows of at most ``passages`` passages), decoded
        without special tokens."""
        model, tokenizer = self.loaded()
        pad = compat.pad_token_id(tokenizer)
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt)
            mask[row, width - len(prompt):] = 1
        eos = [i for i in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
               if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id]
        config = self.generation_config(max_new_tokens, pad, eos, passages)
        device = next(model.parameters()).device
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
        return tokenizer.batch_decode(out[:, width:].cpu(), skip_special_tokens=True)

    def generation_config(self, max_new_tokens: int, pad_token_id: int, eos_token_ids: List[int], passages: int):
        """The ``transformers.GenerationConfig`` of one batch whose windows hold at most ``passages`` passages:
        greedy decoding of at most ``max_new_tokens`` tokens, stopping at the end of the turn. A public hook: a
        subclass may return other settings (force the length of a full permutation, say)."""
        from transformers import GenerationConfig

        return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                pad_token_id=pad_token_id, eos_token_id=eos_token_ids or None)

    # ---- scoring ------------------------------------------------------------------------------------------------
    def record_output(self, query: str, passages: int, max_new_tokens: int, text: str,
                      parsed: ParsedPermutation) -> None:
        """Called with every window's generated ``text`` and its parse (the window held ``passages`` passages of
        ``query``; the budget was ``max_new_tokens``): counts it in ``format_stats``. A public hook: a subclass may
        keep more (every raw output, say)."""
        self.format_stats.add(parsed, text)

    def score_lists(self, lists: Sequence[QueryPassages], desc: str = "RankGPT") -> List[np.ndarray]:
        """Scores for several (query, passages) lists; passages in first-stage order. Higher is better."""
        _, tokenizer = self.loaded()
        orders = [list(range(len(passages))) for _, passages in lists]
        plans = [sliding_windows(len(passages), self.window_size, self.stride) for _, passages in lists]
        prepared = []
        for query, passages in lists:
            (query,), _ = truncate(tokenizer, [query.strip()], self.max_query_tokens)
            prepared.append((query, truncate(tokenizer, passages, self.max_passage_tokens)[0]))
        steps = max((len(plan) for plan in plans), default=0)
        with pt.tqdm(total=sum(len(p) for p in plans), desc=desc, unit="window", disable=not self.verbose) as bar:
            for step in range(steps):  # step k of every list together: windows of one list depend on each other
                jobs = []
                for i, plan in enumerate(plans):
                    if step < len(plan):
                        start, end = plan[step]
                        query, texts = prepared[i]
                        window = [texts[j] for j in orders[i][start:end]]
                        jobs.append(_Job(i, start, end, query, self._prompt_ids(tokenizer, query, window)))
                jobs.sort(key=lambda job: len(job.prompt_ids))
                for first in range(0, len(jobs), self.batch_size):
                    batch = jobs[first:first + self.batch_size]
                    widest = max(job.end - job.start for job in batch)
                    budget = self.max_new_tokens or 5 * widest + 8
                    outputs = self._generate([job.prompt_ids for job in batch], budget, widest)
                    for job, text in zip(batch, outputs):
                        parsed = parse_permutation(text, job.end - job.start)
                        self.record_output(job.query, job.end - job.start, budget, text, parsed)
                        current = orders[job.list_index][job.start:job.end]
                        orders[job.list_index][job.start:job.end] = [current[k] for k in parsed.order]
                    bar.update(len(batch))
        scores = []
        for order in orders:
            score = np.empty(len(order), dtype=np.float64)
            score[order] = len(order) - np.arange(len(order))
            scores.append(score)
        return scores

    # ---- PyTerrier ----------------------------------------------------------------------------------------------
    def schematic(self, *, input_columns=None):
        return {"label": "RankGPT", "help_url": HELP_URL}

    def __repr__(self) -> str:
        return f"RankGPT({self.model_name!r}, window_size={self.window_size}, stride={self.stride})"
