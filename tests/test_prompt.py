"""Listwise prompt: layout, truncation at token boundaries, exact spans with real tokenizers."""
import pytest

from pyterrier_headrank.prompt import ListwisePrompt

PASSAGES = [
    "Aspirin inhibits cyclooxygenase and reduces the risk of myocardial infarction.",
    "  leading and trailing spaces stay part of the passage  ",
    "東京は日本の首都です。猫🐱と犬🐶。",
    "",
    "A passage\nwith a newline and [brackets] and Query: inside it.",
]


def _tokenizers(qwen3_tokenizer, smollm2):
    return {"qwen3": qwen3_tokenizer, "smollm2": smollm2[1]}


@pytest.fixture(params=["qwen3", "smollm2"])
def tokenizer(request, qwen3_tokenizer):
    if request.param == "qwen3":
        return qwen3_tokenizer
    return request.getfixturevalue("smollm2")[1]


def test_every_span_decodes_to_its_passage(tokenizer):
    prompt = ListwisePrompt(tokenizer, max_passage_tokens=200)
    part = prompt.query_part("does aspirin prevent heart attacks?")
    window = prompt.window(PASSAGES, part)
    ids = window.prefix_ids
    for passage, (start, end) in zip(PASSAGES, window.passage_spans):
        decoded = tokenizer.decode(ids[start:end])
        assert decoded.strip() == passage.strip()
        assert (end > start) == bool(passage)
    spans = [span for span in window.passage_spans if span[1] > span[0]]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "spans are ordered and disjoint"
    query = tokenizer.decode(part.ids[part.span[0]:part.span[1]])
    assert query.strip() == "does aspirin prevent heart attacks?"
    calibration = prompt.calibration
    assert tokenizer.decode(calibration.ids[calibration.span[0]:calibration.span[1]]).strip() == "N/A"


def test_layout_is_passages_first_query_last(qwen3_tokenizer):
    prompt = ListwisePrompt(qwen3_tokenizer)
    window = prompt.window(["first passage", "second passage"], prompt.query_part("the query"))
    text = qwen3_tokenizer.decode(window.prefix_ids + window.query.ids)
    assert text.index("[1] first passage") < text.index("[2] second passage") < text.index("Query: the query")
    assert text.startswith("<|im_start|>user")
    assert "<think>\n\n</think>" in text  # Qwen3's thinking is switched off
    assert text.rstrip().endswith("</think>")


def test_truncation_cuts_at_a_token_boundary(qwen3_tokenizer):
    prompt = ListwisePrompt(qwen3_tokenizer, max_passage_tokens=16)
    long = "word " * 5000 + "東京🐱"
    texts, counts = prompt.truncate_passages([long, "short one"])
    assert counts[0] == 16 and counts[1] == len(qwen3_tokenizer("short one", add_special_tokens=False)["input_ids"])
    assert long.startswith(texts[0]) and len(texts[0]) < len(long)
    assert len(qwen3_tokenizer(texts[0], add_special_tokens=False)["input_ids"]) == 16
    window = prompt.window(texts, prompt.query_part("q"))
    start, end = window.passage_spans[0]
    assert qwen3_tokenizer.decode(window.prefix_ids[start:end]).strip() == texts[0].strip()


def test_long_query_is_truncated(qwen3_tokenizer):
    prompt = ListwisePrompt(qwen3_tokenizer, max_query_tokens=8)
    part = prompt.query_part("a very long query " * 100)
    assert part.span[1] - part.span[0] <= 9  # 8 tokens, one more if a token straddles the cut


def test_model_without_chat_template_gets_a_plain_prompt(qwen3_tokenizer):
    import copy
    plain = copy.deepcopy(qwen3_tokenizer)
    plain.chat_template = None
    prompt = ListwisePrompt(plain)
    window = prompt.window(["alpha"], prompt.query_part("beta"))
    text = plain.decode(window.prefix_ids + window.query.ids)
    assert "<|im_start|>" not in text and "[1] alpha" in text and "Query: beta" in text
