"""HeadRank's truncated SDPA read equals eager ``output_attentions`` on stock architectures."""
import pytest
import torch

from pyterrier_headrank.attention import AttentionReader
from pyterrier_headrank.heads import HeadSet
from pyterrier_headrank.prompt import ListwisePrompt

from conftest import tiny_decoder
from eager_reference import eager_scores

PASSAGES = [
    "Cats are small carnivorous mammals, often kept as pets.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "",  # an empty passage has no tokens and gets no attention
    "Domestic cats (Felis catus) were domesticated in the Near East around 7500 BC.",
    "東京は日本の首都です。🐱 emoji and CJK text are passages too.",
]
QUERY = "when were cats domesticated?"


def _windows(tokenizer):
    prompt = ListwisePrompt(tokenizer, max_passage_tokens=24)
    part = prompt.query_part(QUERY)
    texts, _ = prompt.truncate_passages(PASSAGES)
    return [prompt.window(texts, part), prompt.window(texts[:3][::-1], prompt.query_part("stock market"))]


def _check(model, tokenizer, heads, calibrate, truncate=True):
    windows = _windows(tokenizer)
    reader = AttentionReader(model, pad_token_id=tokenizer.pad_token_id or 0)
    with torch.no_grad():
        readout = reader.read(windows, heads, calibrate=calibrate, truncate=truncate)  # a padded batch of two
    got = readout.passage_mass - (readout.calibration_passage_mass if calibrate else 0)
    for b, window in enumerate(windows):
        expected = eager_scores(model, window, heads, calibrate).float()
        actual = got[b, :, : window.num_passages]
        assert expected.abs().max() > 1e-4, "the reference is not trivial"
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("calibrate", [False, True])
@pytest.mark.parametrize("kind", ["qwen3", "qwen2", "llama", "gemma3"])
def test_tiny_decoders_match_eager(kind, calibrate, qwen3_tokenizer):
    model = tiny_decoder(kind)
    heads = HeadSet(((1, 0), (1, 3), (2, 1), (0, 2)), (1.0, 0.5, 2.0, 1.0))  # unordered, GQA pairs across kv heads
    _check(model, qwen3_tokenizer, heads, calibrate)


def test_truncated_pass_equals_full_pass(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    heads = HeadSet(((1, 2), (0, 1)))
    reader = AttentionReader(model, pad_token_id=tokenizer.pad_token_id)
    windows = _windows(tokenizer)
    with torch.no_grad():
        short = reader.read(windows, heads, calibrate=True, truncate=True)
        full = reader.read(windows, heads, calibrate=True, truncate=False)
    torch.testing.assert_close(short.passage_mass, full.passage_mass, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(short.calibration_passage_mass, full.calibration_passage_mass, rtol=1e-5, atol=1e-7)


def test_truncated_pass_stops_inside_the_deepest_layer(tiny_qwen3):
    """Heads of layer 1 only: layer 0 runs whole, layer 1 up to its attention (q/k/v projections), no further."""
    model, tokenizer = tiny_qwen3
    reader = AttentionReader(model, pad_token_id=tokenizer.pad_token_id)
    seen = []
    modules = {f"layer{n}": layer for n, layer in enumerate(model.model.layers)}
    modules.update({f"mlp{n}": layer.mlp for n, layer in enumerate(model.model.layers)})
    modules.update({f"o_proj{n}": layer.self_attn.o_proj for n, layer in enumerate(model.model.layers)})
    modules.update({f"k_proj{n}": layer.self_attn.k_proj for n, layer in enumerate(model.model.layers)})
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: seen.append(name))
             for name, module in modules.items()]
    try:
        with torch.no_grad():
            reader.read(_windows(tokenizer)[:1], HeadSet(((1, 0),)), calibrate=True)
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(set(seen)) == ["k_proj0", "k_proj1", "layer0", "mlp0", "o_proj0"]


@pytest.mark.parametrize("calibrate", [False, True])
def test_smollm2_matches_eager(smollm2, calibrate):
    model, tokenizer = smollm2
    heads = HeadSet(((4, 0), (10, 8), (15, 3), (7, 5)))
    _check(model, tokenizer, heads, calibrate)
