"""ICR baseline: all heads, full depth, "N/A" calibration with ICR's token filter, on the core attention reader."""
import json

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest
import torch

from pyterrier_headrank import HeadRank
from pyterrier_headrank.baselines import ICR
from pyterrier_headrank.baselines.icr import filtered_calibrated_sum
from pyterrier_headrank.heads import HeadSet

from conftest import SHARED, need
from eager_reference import eager_attention

PASSAGES = [
    "Cats are small carnivorous mammals, often kept as pets in many households around the world.",
    "The stock market fell sharply on Tuesday after the central bank announced a rate rise.",
    "Domestic cats (Felis catus) were domesticated in the Near East around 7500 BC, archaeology suggests.",
    "",
    "Dogs were domesticated from wolves, probably more than fifteen thousand years ago.",
]
QUERY = "when were cats domesticated?"


def _filter_reference(query_mass: np.ndarray, calibration_mass: np.ndarray) -> float:
    """ICR's per-passage rule written out: calibrate, keep tokens above mean - 2 std (sample std), sum."""
    calibrated = query_mass.astype(np.float64) - calibration_mass.astype(np.float64)
    if calibrated.size == 0:
        return 0.0
    if calibrated.size == 1:
        return float(calibrated[0])
    threshold = calibrated.mean() - 2 * calibrated.std(ddof=1)
    return float(sum(c for c in calibrated if c > threshold))


def _eager_token_mass(model, ids, query_span):
    """Attention mass per key token, summed over every head of every layer, mean over the query tokens: eager."""
    with torch.no_grad(), eager_attention(model):
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    start, end = query_span
    return sum(a[0, :, start:end].double().mean(1).sum(0) for a in out.attentions).numpy()


def _eager_icr_scores(model, window):
    prefix = list(window.prefix_ids)
    query = _eager_token_mass(model, prefix + window.query.ids,
                              [len(prefix) + i for i in window.query.span])
    calibration = _eager_token_mass(model, prefix + window.calibration.ids,
                                    [len(prefix) + i for i in window.calibration.span])
    return np.array([_filter_reference(query[a:b], calibration[a:b]) for a, b in window.passage_spans])


def test_filter_drops_tokens_far_below_the_passage_mean():
    query = torch.tensor([0.3] * 9 + [0.0], dtype=torch.float64)
    # the last token: a sink that "N/A" attends to much more
    calibration = torch.tensor([0.2] * 9 + [0.9], dtype=torch.float64)
    assert float(filtered_calibrated_sum(query, calibration)) == pytest.approx(0.9)
    assert float(filtered_calibrated_sum(query, calibration, filter_tokens=False)) == pytest.approx(0.0, abs=1e-6)
    values = torch.rand(50, generator=torch.Generator().manual_seed(1))
    assert float(filtered_calibrated_sum(values, values * 0.5)) == pytest.approx(
        _filter_reference(values.numpy(), values.numpy() * 0.5))
    assert float(filtered_calibrated_sum(torch.tensor([0.4]), torch.tensor([0.1]))) == pytest.approx(0.3)
    assert float(filtered_calibrated_sum(torch.zeros(0), torch.zeros(0))) == 0.0


def test_icr_reads_all_heads_at_full_depth(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    icr = ICR(model, tokenizer=tokenizer)
    assert icr.head_set == HeadSet.all_heads(4, 4) and icr.head_set.deepest_layer == 3
    # max_window_tokens=None: the model's context length, so a list far past HeadRank's 4096-token default fits one
    # prompt; the setting itself stays None
    long_list = [f"passage {i}: " + " ".join(["word"] * 60) for i in range(120)]
    (plan,), (window,) = icr.windows(QUERY, long_list)
    assert plan == list(range(120)) and 4096 < len(window) <= model.config.max_position_embeddings
    assert icr.max_window_tokens is None


def test_icr_matches_eager_attention_with_token_filter(tiny_qwen3):
    """Scores from the reader's token masses (batched, left-padded) equal an eager L x L computation."""
    model, tokenizer = tiny_qwen3
    icr = ICR(model, tokenizer=tokenizer, max_passage_tokens=24, batch_size=2)
    lists = [(QUERY, PASSAGES), ("stock market news", PASSAGES[:2][::-1] + ["a"])]
    got = icr.score_lists(lists)
    _, prompt, _ = icr.engine()
    filtered_something = False
    for (query, passages), scores in zip(lists, got):
        (plan,), (window,) = icr.windows(query, passages)
        assert plan == list(range(len(passages))), "one window holds the whole list"
        expected = _eager_icr_scores(model, window)
        assert np.abs(expected).max() > 1e-4
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
        no_filter = ICR(model, tokenizer=tokenizer, max_passage_tokens=24, token_filter=False)
        (unfiltered,) = no_filter.score_lists([(query, passages)])
        filtered_something |= bool(np.abs(unfiltered - scores).max() > 1e-6)
    assert filtered_something, "the token filter removed no token anywhere: the test would not see it"


def test_icr_without_calibration_is_plain_attention_mass(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    icr = ICR(model, tokenizer=tokenizer, calibrate=False, max_passage_tokens=24)
    (scores,) = icr.score_lists([(QUERY, PASSAGES)])
    _, prompt, _ = icr.engine()
    _, (window,) = icr.windows(QUERY, PASSAGES)
    prefix = list(window.prefix_ids)
    mass = _eager_token_mass(model, prefix + window.query.ids, [len(prefix) + i for i in window.query.span])
    np.testing.assert_allclose(scores, [mass[a:b].sum() for a, b in window.passage_spans], rtol=1e-4, atol=1e-6)


def test_long_list_is_split_and_every_candidate_scored(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    passages = [f"passage number {i} about cats and dogs and other animals" for i in range(12)]
    icr = ICR(model, tokenizer=tokenizer, max_passage_tokens=16, max_window_tokens=260, n_anchors=2)
    _, prompt, _ = icr.engine()
    plan, _ = icr.windows(QUERY, passages)
    assert len(plan) > 1
    (scores,) = icr.score_lists([(QUERY, passages)])
    assert scores.shape == (12,) and np.isfinite(scores).all()


def _frame():
    return pd.DataFrame({
        "qid": ["q1"] * 3 + ["q2"] * 2, "query": [QUERY] * 3 + ["stock market"] * 2,
        "docno": ["d1", "d2", "d3", "d4", "d5"], "text": PASSAGES[:3] + PASSAGES[1:3],
        "rank": [0, 1, 2, 0, 1], "score": [3.0, 2.0, 1.0, 2.0, 1.0], "extra": list("abcde"),
    })


def test_pyterrier_conventions(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    icr = ICR(model, tokenizer=tokenizer, max_passage_tokens=24)
    out = icr(_frame())
    assert set(_frame().columns) <= set(out.columns)
    assert out.groupby("qid")["rank"].apply(list).to_dict() == {"q1": [0, 1, 2], "q2": [0, 1]}
    assert out.groupby("qid")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    (expected,) = icr.score_lists([(QUERY, PASSAGES[:3])])
    q1 = out[out.qid == "q1"].set_index("docno")["score"]
    np.testing.assert_allclose(q1.loc[["d1", "d2", "d3"]].to_numpy(), expected, rtol=1e-5)
    empty = icr(_frame().iloc[:0])
    assert len(empty) == 0 and {"score", "rank"} <= set(empty.columns)
    with pytest.raises(pt.validate.InputValidationError, match="ICR"):
        icr(_frame().drop(columns=["text"]))
    bad = _frame()
    bad.loc[0:2, "query"] = " "
    with pytest.raises(ValueError, match="ICR: the query of qid 'q1' is empty"):
        icr(bad)
    with pytest.raises(ValueError, match="ICR: a loaded model needs its tokenizer"):
        ICR(model)
    with pytest.raises(ValueError, match="ICR: need n_anchors"):
        ICR(n_anchors=5, max_window_passages=3)
    # training-free: a plain transformer, with nothing to fit, save or load
    assert not isinstance(icr, pt.Estimator) and not isinstance(icr, HeadRank)
    assert not any(hasattr(icr, name) for name in ("fit", "save", "to_hf", "from_pretrained", "from_hf"))
    assert repr(ICR()) == "ICR('smollm2-135m')"
    assert pt.inspect.transformer_inputs(icr) == [["qid", "query", "docno", "text"]]


class TestICRTransformer(pt.testing.TransformerTestCase):
    @staticmethod
    def get_transformer():
        return ICR("smollm2-135m")


def test_smollm2_icr_matches_eager_and_reranks_dl21(smollm2):
    """On the real SmolLM2: eager equivalence on a short list, and a real DL21 candidate list reranked."""
    model, tokenizer = smollm2
    icr = ICR("smollm2-135m", device="cpu", max_passage_tokens=20)
    (scores,) = icr.score_lists([(QUERY, PASSAGES[:4])])
    _, prompt, _ = icr.engine()
    _, (window,) = icr.windows(QUERY, PASSAGES[:4])
    np.testing.assert_allclose(scores, _eager_icr_scores(model, window), rtol=2e-3, atol=1e-4)
    assert scores[2] > scores[1], "the passage on cat domestication beats the stock market one"

    path = need(SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl")
    with open(path) as f:
        rows = [json.loads(line) for line, _ in zip(f, range(300))]
    frame = pd.DataFrame(rows)
    frame = frame[frame["rank"] <= 8]
    frame = frame[frame.qid.isin(frame.qid.unique()[:2])]
    out = ICR("smollm2-135m", device="cpu", max_passage_tokens=48)(frame)
    assert len(out) == len(frame) and set(out.docno) == set(frame.docno)
    assert np.isfinite(out.score).all() and out.groupby("qid")["score"].nunique().min() > 1
