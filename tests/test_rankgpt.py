"""RankGPT baseline: permutation parsing, back-to-front sliding windows, greedy generation, PyTerrier conventions."""
import json
import re

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

from pyterrier_headrank.baselines import RankGPT, parse_permutation, sliding_windows
from pyterrier_headrank.baselines.rankgpt import PASSAGE_REPLY, SYSTEM, rankgpt_messages

from conftest import SHARED, need


# ---- parsing ----------------------------------------------------------------------------------------------------
def test_parse_full_permutation():
    parsed = parse_permutation("[2] > [3] > [1]", 3)
    assert parsed.order == (1, 2, 0) and parsed.complete and parsed.named == 3


def test_parse_missing_identifiers_keep_their_input_order():
    parsed = parse_permutation("[4] > [2]", 5)
    assert parsed.order == (3, 1, 0, 2, 4) and parsed.missing == 3 and not parsed.complete


def test_parse_repeated_and_out_of_range():
    parsed = parse_permutation("[2] > [2] > [7] > [0] > [1] > [3]", 3)
    assert parsed.order == (1, 0, 2)
    assert (parsed.repeated, parsed.out_of_range, parsed.missing) == (1, 2, 0) and not parsed.complete


def test_parse_prose_and_spacing_around_brackets():
    parsed = parse_permutation("Sure! The ranking is [ 3 ] > [1]>[2]. Hope this helps.", 3)
    assert parsed.order == (2, 0, 1) and parsed.complete


def test_parse_bare_numbers_only_without_brackets():
    assert parse_permutation("3 > 1 > 2", 3).order == (2, 0, 1)
    assert parse_permutation("2, 1 (score 0.75)", 3).order == (1, 0, 2)  # 0.75 is not an identifier
    with_brackets = parse_permutation("[2] > [1], 3 is not relevant", 3)
    assert with_brackets.order == (1, 0, 2) and with_brackets.missing == 1  # bare 3 ignored once brackets exist


def test_parse_a_single_identifier_is_not_an_order():
    echoed = parse_permutation("Received passage [20].", 20)
    assert echoed.order == tuple(range(20)) and echoed.named == 0 and echoed.missing == 20
    assert not echoed.complete
    assert parse_permutation("[21]", 20).out_of_range == 1
    assert parse_permutation("[1]", 1).complete  # a window of one passage
    assert parse_permutation("[3] > [2]", 20).order[:3] == (2, 1, 0)  # two identifiers are an order


def test_parse_nothing_usable():
    for text in ["", "I cannot rank these.", None]:
        parsed = parse_permutation(text, 4)
        assert parsed.order == (0, 1, 2, 3) and parsed.missing == 4 and not parsed.complete
    assert parse_permutation("", 0).order == () and parse_permutation("", 0).complete


# ---- windows ----------------------------------------------------------------------------------------------------
def test_windows_back_to_front():
    assert sliding_windows(30, 20, 10) == [(10, 30), (0, 20)]
    assert sliding_windows(100, 20, 10) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50),
                                            (20, 40), (10, 30), (0, 20)]
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]  # the head of the list is reranked too
    assert sliding_windows(7, 20, 10) == [(0, 7)] and sliding_windows(0, 20, 10) == []


class OracleRankGPT(RankGPT):
    """RankGPT whose generator is an oracle: it ranks a window by the number hidden in each passage ("doc 17").

    Only the language model is replaced; prompting, windows, parsing and reordering are RankGPT's own.
    """

    def __init__(self, tokenizer, broken_every=0, **kwargs):
        super().__init__(object(), tokenizer=tokenizer, **kwargs)
        self.calls = []
        self.texts = []
        self.broken_every = broken_every

    def _generate(self, prompts, max_new_tokens, passages):
        _, tokenizer = self.loaded()
        outputs = []
        for ids in prompts:
            text = tokenizer.decode(ids)
            self.texts.append(text)
            docs = [int(d) for d in re.findall(r"\[\d+\] doc (\d+)", text)]
            self.calls.append(docs)
            ranked = sorted(range(len(docs)), key=lambda i: -docs[i])
            out = " > ".join(f"[{i + 1}]" for i in ranked)
            if self.broken_every and len(self.calls) % self.broken_every == 0:
                out = " > ".join(f"[{i + 1}]" for i in ranked[:3])  # stops early
            outputs.append(out)
        return outputs


def test_sliding_procedure_on_30_candidates(qwen3_tokenizer):
    """First-stage order is the worst first: window (10, 30) lifts 29..20, window (0, 20) brings them to the top."""
    ranker = OracleRankGPT(qwen3_tokenizer)
    passages = [f"doc {i}" for i in range(30)]
    (scores,) = ranker.score_lists([("query", passages)])
    assert ranker.calls == [list(range(10, 30)), list(range(10)) + list(range(29, 19, -1))]
    order = list(np.argsort(-scores, kind="stable"))
    assert order == list(range(29, 19, -1)) + list(range(9, -1, -1)) + list(range(19, 9, -1))
    assert ranker.format_stats.windows == 2 and ranker.format_stats.success_rate == 1.0


def test_windows_of_several_queries_run_in_lockstep_batches(qwen3_tokenizer):
    lists = [("a", [f"doc {i}" for i in range(30)]), ("b", [f"doc {i}" for i in (5, 1, 8, 3)]),
             ("c", [f"doc {i}" for i in range(45, 0, -3)])]
    together = OracleRankGPT(qwen3_tokenizer, batch_size=8)
    batched = together.score_lists(lists)
    for (query, passages), scores in zip(lists, batched):
        alone = OracleRankGPT(qwen3_tokenizer).score_lists([(query, passages)])[0]
        np.testing.assert_array_equal(scores, alone)
    assert len(together.calls) == 2 + 1 + 1  # list a: 2 windows, b: 1, c: 15 passages -> 1


def test_format_success_counts_incomplete_outputs(qwen3_tokenizer):
    ranker = OracleRankGPT(qwen3_tokenizer, broken_every=2, window_size=4, stride=2)
    (scores,) = ranker.score_lists([("q", [f"doc {i}" for i in range(8)])])
    stats = ranker.format_stats
    assert stats.windows == 3 and stats.complete == 2 and stats.success_rate == pytest.approx(2 / 3)
    assert stats.missing == 1 and sorted(scores) == list(range(1, 9))
    stats.reset()
    assert stats.windows == 0 and np.isnan(stats.success_rate)


def test_prompt_is_the_rankgpt_conversation(qwen3_tokenizer):
    messages = rankgpt_messages("what is x", ["alpha", "beta"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user",
                                             "assistant", "user"]
    assert messages[3]["content"] == "[1] alpha" and messages[6]["content"] == PASSAGE_REPLY.format(i=2)
    assert "what is x" in messages[1]["content"] and "what is x" in messages[-1]["content"]
    ranker = OracleRankGPT(qwen3_tokenizer, max_passage_tokens=3)  # "doc", " ", "5"
    ranker.score_lists([("a query", ["doc 5 with more words", "doc 7"])])
    (text,) = ranker.texts
    assert text.startswith("<|im_start|>system\n" + SYSTEM + "<|im_end|>")
    assert "[1] doc 5<|im_end|>" in text and "[2] doc 7<|im_end|>" in text, "passages cut to 3 tokens"
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "Qwen3 thinking is off"


# ---- real generation ----------------------------------------------------------------------------------------------
def _frame():
    return pd.DataFrame({
        "qid": ["q1"] * 3 + ["q2"] * 2, "query": ["cats"] * 3 + ["stock market"] * 2,
        "docno": ["d1", "d2", "d3", "d4", "d5"],
        "text": ["cats purr", "stocks fell", "felis catus", "the market", "bonds"],
        "rank": [0, 1, 2, 0, 1], "score": [3.0, 2.0, 1.0, 2.0, 1.0], "extra": list("abcde"),
    })


def test_greedy_generation_on_a_tiny_model(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    first = RankGPT(model, tokenizer=tokenizer, max_new_tokens=6)
    out = first(_frame())
    assert set(_frame().columns) <= set(out.columns) and len(out) == 5
    assert out.groupby("qid")["rank"].apply(list).to_dict() == {"q1": [0, 1, 2], "q2": [0, 1]}
    assert sorted(out[out.qid == "q1"].score) == [1.0, 2.0, 3.0]
    assert first.format_stats.windows == 2 and all(first.format_stats.outputs)
    second = RankGPT(model, tokenizer=tokenizer, max_new_tokens=6, batch_size=1)
    second(_frame())
    assert second.format_stats.outputs == first.format_stats.outputs  # greedy: the same text, batched or not


def test_pyterrier_conventions(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    ranker = RankGPT(model, tokenizer=tokenizer, max_new_tokens=2)
    empty = ranker(_frame().iloc[:0])
    assert len(empty) == 0 and {"score", "rank"} <= set(empty.columns) and ranker.format_stats.windows == 0
    with pytest.raises(pt.validate.InputValidationError, match="RankGPT"):
        ranker(_frame().drop(columns=["text"]))
    bad = _frame()
    bad.loc[0:2, "query"] = ""
    with pytest.raises(ValueError, match="RankGPT: the query of qid 'q1' is empty"):
        ranker(bad)
    with pytest.raises(ValueError, match="RankGPT: a loaded model needs its tokenizer"):
        RankGPT(model)
    with pytest.raises(ValueError, match="RankGPT: need window_size"):
        RankGPT(window_size=10, stride=11)
    for setting in ({"window_size": float("nan")}, {"window_size": 2.9}, {"stride": "two"}, {"max_new_tokens": 1.5}):
        with pytest.raises(ValueError, match=f"RankGPT: {next(iter(setting))}=.* must be a whole number"):
            RankGPT(**setting)
    assert repr(RankGPT()) == "RankGPT('smollm2-135m', window_size=20, stride=10)"
    assert pt.inspect.transformer_inputs(ranker) == [["qid", "query", "docno", "text"]]


class TestRankGPTTransformer(pt.testing.TransformerTestCase):
    @staticmethod
    def get_transformer():
        return RankGPT("smollm2-135m")


def test_smollm2_reranks_dl21_candidates(smollm2):
    path = need(SHARED / "data" / "dl21-passage-bm25top100" / "candidates.jsonl")
    with open(path) as f:
        rows = [json.loads(line) for line, _ in zip(f, range(300))]
    frame = pd.DataFrame(rows)
    frame = frame[(frame["rank"] <= 6) & frame.qid.isin(frame.qid.unique()[:2])]
    ranker = RankGPT("smollm2-135m", device="cpu", max_passage_tokens=32)
    out = ranker(frame)
    assert len(out) == len(frame) and set(out.docno) == set(frame.docno)
    for _, group in out.groupby("qid"):
        assert sorted(group.score) == list(range(1, len(group) + 1))
    stats = ranker.format_stats
    assert stats.windows == 2 and all(isinstance(o, str) and o.strip() for o in stats.outputs)
    assert 0.0 <= stats.success_rate <= 1.0
