"""The GPU batch planner and the out-of-memory fallback, tested on CPU (memory sizes and OOMs simulated)."""
import json

import numpy as np
import pytest
import torch
from transformers import Qwen3Config

from pyterrier_headrank import HeadRank
from pyterrier_headrank.batching import MAX_GPU_BATCH, bytes_per_window, plan_batch_size, score_in_batches

import fit_data
from conftest import SHARED, need

GIB = 1 << 30


def _qwen3_4b():
    return Qwen3Config(**json.loads(need(SHARED / "models" / "qwen3-configs" / "qwen3-4b.json").read_text()))


def test_cpu_runs_one_window_at_a_time():
    assert plan_batch_size(torch.device("cpu"), _qwen3_4b(), 15000, 20, torch.float32, free_bytes=100 * GIB) == 1


def test_gpu_batch_grows_with_free_memory_and_is_capped():
    config, cuda = _qwen3_4b(), torch.device("cuda")
    one = bytes_per_window(config, 15000, 24, torch.bfloat16)
    assert 1 * GIB < one < 10 * GIB  # 100 passages of ~150 tokens through 24 layers of Qwen3-4B in bf16
    sizes = [plan_batch_size(cuda, config, 15000, 24, torch.bfloat16, free_bytes=f * GIB) for f in (1, 20, 60, 130)]
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] > sizes[1] > 1
    assert plan_batch_size(cuda, config, 100, 1, torch.bfloat16, free_bytes=130 * GIB) == MAX_GPU_BATCH


def _oom_above(limit, calls):
    def score(windows):
        calls.append(len(windows))
        if len(windows) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.array([[float(w)] for w in windows])
    return score


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size():
    calls = []
    done = []
    results = score_in_batches(list(range(10)), 8, _oom_above(2, calls), done.append)
    assert sorted(results) == list(range(10)) and all(results[i][0] == i for i in results)
    assert calls[:3] == [8, 4, 2] and max(calls[3:]) <= 2 and sum(done) == 10


def test_a_single_window_that_does_not_fit_names_its_size():
    class Window(list):
        pass

    with pytest.raises(RuntimeError, match="HeadRank: out of memory on a single prompt window of 3 tokens"):
        score_in_batches([Window([1, 2, 3])], 4, _oom_above(0, []))
    with pytest.raises(ValueError, match="not memory"):  # other errors pass through untouched
        score_in_batches([1], 1, lambda w: (_ for _ in ()).throw(ValueError("not memory")))


def test_reranker_recovers_from_a_simulated_oom(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    sizes = []

    class SmallGpu(HeadRank):
        def window_scores(self, reader, windows, heads, weights):
            sizes.append(len(windows))
            if len(windows) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().window_scores(reader, windows, heads, weights)

    frame = fit_data.results()
    expected = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, batch_size=1)(frame)
    out = SmallGpu(model, tokenizer=tokenizer, max_passage_tokens=24, batch_size=4)(frame)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}
    assert list(out["docno"]) == list(expected["docno"])
    np.testing.assert_allclose(out["score"], expected["score"], rtol=1e-5, atol=1e-7)
