"""``compile=True``: torch.compile of the layers the pass runs gives the same scores, and compiles each layer once."""
import shutil

import numpy as np
import pytest

from pyterrier_headrank import HeadRank

from conftest import tiny_decoder

QUERY = "why do cats purr"
LISTS = [(QUERY, ["cats purr when content", "dogs bark at night", "purring is a vibration of the larynx"]),
         ("tea or coffee", ["green tea", "espresso is strong coffee", "water", "black tea with milk", "juice"])]


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler, and none is installed")
def test_compiled_layers_give_the_eager_scores(qwen3_tokenizer):
    model = tiny_decoder("qwen3", seed=5)  # its own model: compiling changes the module in place
    eager = HeadRank(model, tokenizer=qwen3_tokenizer, max_passage_tokens=24).score_lists(LISTS)
    compiled = HeadRank(model, tokenizer=qwen3_tokenizer, max_passage_tokens=24, compile=True)
    for _ in range(2):  # two lists of other lengths each time: dynamic shapes, no failure on a new length
        for got, expected in zip(compiled.score_lists(LISTS), eager):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    layers = [layer for layer in model.model.layers[: compiled.head_set.deepest_layer + 1]]
    assert all(layer._compiled_call_impl is not None for layer in layers), "the layers that run are compiled"
    assert compiled.__getstate__()["settings"].compile is True, "the setting travels to parallel workers"
