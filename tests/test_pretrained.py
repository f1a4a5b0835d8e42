"""The fit shipped inside the package (SmolLM2-135M, heads selected and aligned on SciFact train)."""
import pandas as pd
import pytest

from pyterrier_headrank import HeadRank
from pyterrier_headrank.registry import pretrained_names


def test_shipped_fit_is_listed_and_unknown_names_are_clear_errors():
    assert "smollm2-135m-scifact" in pretrained_names()
    with pytest.raises(FileNotFoundError, match="smollm2-135m-scifact"):
        HeadRank.from_pretrained("no-such-fit")


def test_shipped_fit_loads_and_reranks_with_its_heads(smollm2):
    reranker = HeadRank.from_pretrained("smollm2-135m-scifact", device="cpu")
    assert reranker.heads is not None and len(reranker.heads) == 8
    assert reranker.head_set.deepest_layer == max(layer for layer, _ in reranker.heads.heads)
    zero_shot = HeadRank("smollm2-135m", device="cpu", max_passage_tokens=reranker.max_passage_tokens)
    frame = pd.DataFrame({"qid": "1", "query": "Vitamin D deficiency increases the risk of fractures.",
                          "docno": ["a", "b", "c"],
                          "text": ["Low vitamin D levels were associated with more hip fractures in older adults.",
                                   "The stock market rallied on strong earnings.",
                                   "Calcium intake and bone density in postmenopausal women."]})
    fitted, plain = reranker(frame), zero_shot(frame)
    assert len(fitted) == 3 and fitted.score.notna().all()
    assert not fitted.sort_values("docno").score.reset_index(drop=True).equals(
        plain.sort_values("docno").score.reset_index(drop=True)), "the adapters and heads change the scores"
