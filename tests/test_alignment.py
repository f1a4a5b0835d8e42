"""Alignment: the pair sampler on hand-made qrels, the losses, LoRA on a shallow copy, replay = normal pass."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pyterrier_headrank import HeadRank, HeadSet
from pyterrier_headrank.attention import AttentionReader
from pyterrier_headrank.lora import AdapterConfig, adapted_layers, attach_lora, lora_parameters
from pyterrier_headrank.prompt import ListwisePrompt
from pyterrier_headrank.training.epochs import align_cached, replay_ndcg10
from pyterrier_headrank.training.losses import pairwise_loss, regulariser
from pyterrier_headrank.training.pairs import preference_pairs
from pyterrier_headrank.training.replay import AttentionReplay, prepare
from pyterrier_headrank.training.trainer import AlignSettings, list_loss, train_adapters

import fit_data

HEADS = HeadSet(((0, 1), (2, 3), (3, 0), (3, 2)), (1.0, 0.5, 1.0, 2.0))


# ---- pairs ----------------------------------------------------------------------------------------------------
def test_binary_pairs_relevant_over_irrelevant():
    pairs = preference_pairs([1, 0, 0, 1])
    assert sorted(map(tuple, pairs)) == [(0, 1), (0, 2), (3, 1), (3, 2)]


def test_graded_pairs_adjacent_levels_present():
    labels = [0, 2, 3, 0, 2]                      # levels present: 0 < 2 < 3 (no 1)
    pairs = sorted(map(tuple, preference_pairs(labels)))
    assert pairs == [(1, 0), (1, 3), (2, 1), (2, 4), (4, 0), (4, 3)]
    assert len(preference_pairs([2, 2, 2])) == 0 and preference_pairs([]).shape == (0, 2)


def test_hard_negatives_and_hardest_first():
    labels = [0, 2, 3, 0, 2, 0]
    scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.0]
    pairs = [tuple(p) for p in preference_pairs(labels, scores, hard_negatives=1)]
    # the hardest lowest-grade passage is 0 (score .9); 3 over 0 is added beside the adjacent pairs
    assert (2, 0) in pairs and (2, 3) not in pairs and (2, 5) not in pairs
    margins = [scores[w] - scores[l] for w, l in pairs]
    assert margins == sorted(margins) and margins[0] < 0      # wrongly ordered pairs first
    assert pairs[0] == (1, 0)                                  # .1 - .9, the most wrongly ordered
    capped = preference_pairs(labels, scores, max_pairs=3, hard_negatives=1)
    assert [tuple(p) for p in capped] == pairs[:3]


# ---- losses ---------------------------------------------------------------------------------------------------
def test_pairwise_loss_is_bradley_terry():
    scores = torch.tensor([0.3, -0.2, 0.5])
    pairs = np.array([[0, 1], [1, 2]])
    expected = -(math.log(1 / (1 + math.exp(-2 * 0.5 / 0.5))) + math.log(1 / (1 + math.exp(-2 * -0.7 / 0.5)))) / 2
    assert float(pairwise_loss(scores, pairs, beta=2.0, scale=0.5)) == pytest.approx(expected, rel=1e-6)
    # relative to a reference equal to the scores: every margin is 0, the loss is log 2
    assert float(pairwise_loss(scores, pairs, reference=scores.clone())) == pytest.approx(math.log(2))
    assert float(pairwise_loss(scores, np.zeros((0, 2), dtype=int))) == 0.0


def test_regulariser_formula():
    scores = torch.tensor([1.0, 0.0, 2.0, -1.0, 0.5])
    middle = np.array([False, True, True, True, False])
    p = torch.softmax(scores / 2.0, 0)
    entropy = float(-(p * p.log()).sum())
    variance = float((scores[1:4] / 2.0).var(unbiased=False))
    value = float(regulariser(scores, middle, gamma=0.3, eta=0.7, scale=2.0))
    assert value == pytest.approx(0.3 * entropy - 0.7 * variance, rel=1e-6)


# ---- adapters and replay --------------------------------------------------------------------------------------
@pytest.fixture()
def setup(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    prompt = ListwisePrompt(tokenizer, max_passage_tokens=24)
    config = AdapterConfig(adapted_layers(HEADS, 2), rank=4)
    adapted = attach_lora(model, config, seed=0)
    replay = AttentionReplay(adapted, HEADS, min(config.layers), True, tokenizer.pad_token_id)
    items, windows = [], []
    for qid in ("q1", "q2", "q3"):
        query, texts = fit_data.PASSAGES[qid]
        window = prompt.window(prompt.truncate_passages(texts)[0], prompt.query_part(query))
        labels = np.zeros(len(texts))
        for i, g in fit_data.GRADED[qid].items():
            labels[i] = g
        windows.append(window)
        items.append(replay.capture(window, qid, [f"{qid}-d{i}" for i in range(len(texts))], labels))
    prepare(replay, items)
    return model, tokenizer, replay, items, windows


def _read(model, tokenizer, windows):
    reader = AttentionReader(model, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        readout = reader.read(windows, HEADS, calibrate=True)
    return readout.scores(torch.tensor(HEADS.weights))


def test_adapters_only_on_deepest_selected_layers(setup):
    model, _, replay, _, _ = setup
    assert adapted_layers(HEADS, 2) == (2, 3) and adapted_layers(HEADS, 0) == (0, 2, 3)
    names = list(lora_parameters(replay.model))
    assert names and all(".layers.2." in n or ".layers.3." in n for n in names)
    assert any("q_proj" in n for n in names) and any("k_proj" in n for n in names)
    # the original model is untouched: no LoRA modules, its weights are the copy's (shared, not duplicated)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert replay.model.model.layers[1].mlp.up_proj.weight.data_ptr() == model.model.layers[1].mlp.up_proj.weight.data_ptr()


def test_gradients_reach_only_the_adapters(setup):
    model, _, replay, items, _ = setup
    loss = list_loss(replay.scores(items[0]), items[0], AlignSettings())
    loss.backward()
    for name, p in replay.model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
            if "lora_B" in name:  # B starts at 0, so A's gradient is 0 at the first step; B's is not
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert all(p.grad is None for p in model.parameters())


def test_training_lowers_the_loss_and_replay_equals_the_normal_pass(setup):
    model, tokenizer, replay, items, windows = setup
    before_base = _read(model, tokenizer, windows)
    start = _read(replay.model, tokenizer, windows)
    for item, row in zip(items, start):  # adapters start at B = 0: replay = the frozen model's pass
        torch.testing.assert_close(item.initial, row[: item.num_passages].float(), rtol=1e-5, atol=1e-7)
    settings = AlignSettings(epochs=8, lr=1e-2)

    def mean_loss():
        with torch.no_grad():
            return float(np.mean([float(list_loss(replay.scores(i), i, settings)) for i in items]))

    loss0 = mean_loss()
    result = train_adapters(replay, items, settings, verbose=False)
    assert result.steps == 8 * 3
    assert mean_loss() < 0.5 * loss0
    after = _read(replay.model, tokenizer, windows)
    with torch.no_grad():
        for item, row in zip(items, after):
            torch.testing.assert_close(replay.scores(item), row[: item.num_passages].float(), rtol=1e-4, atol=1e-6)
            assert not torch.allclose(item.initial, row[: item.num_passages].float(), atol=1e-6)
    torch.testing.assert_close(_read(model, tokenizer, windows), before_base)  # the base model did not change


def test_early_stopping_keeps_the_best_epoch(setup):
    _, _, replay, items, _ = setup
    values = iter([0.5, 0.7, 0.6, 0.4, 0.9])
    seen = []

    def evaluate(rep):
        seen.append({k: v.clone() for k, v in lora_parameters(rep.model).items()})
        return next(values)

    result = train_adapters(replay, items, AlignSettings(epochs=4, lr=1e-2, patience=2), evaluate, verbose=False)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]     # stopped after 2 epochs without a gain
    assert result.best_epoch == 1
    for name, p in lora_parameters(replay.model).items():
        torch.testing.assert_close(p.detach(), seen[1][name])


def test_align_cached_trains_the_epochs_that_cross_fitting_chose(setup):
    _, _, replay, items, _ = setup
    start = replay.state()
    settings = AlignSettings(epochs=3, lr=2e-2)
    result, info = align_cached(replay, items, fit_data.qrels(), settings, cv_folds=3)
    curve = info["cv_mean_ndcg10_by_epoch"]
    assert info["chosen_by"] == "3-fold cross-fitting" and len(curve) == settings.epochs + 1
    chosen = int(np.argmax(curve))
    assert result.best_epoch == chosen and result.steps == chosen * len(items)
    changed = any(not torch.equal(start["lora"][k], v) for k, v in replay.state()["lora"].items())
    assert changed == (chosen > 0)


def test_align_cached_fixed_and_validation(setup):
    _, _, replay, items, _ = setup
    start = replay.state()
    result, info = align_cached(replay, items, fit_data.qrels(), AlignSettings(epochs=2, lr=2e-2), cv_folds=0)
    assert info == {"chosen_by": "fixed epochs"} and result.steps == 2 * len(items)
    replay.load_state(start)
    result, info = align_cached(replay, items[:2], fit_data.qrels(), AlignSettings(epochs=2, lr=2e-2),
                                valid=items[2:], valid_qrels=fit_data.qrels())
    assert info == {"chosen_by": "validation (early stopping)"}
    assert replay_ndcg10(replay, items[2:], fit_data.qrels()) == pytest.approx(
        max(h["valid"] for h in result.history))


def test_fit_with_alignment_changes_scores_and_is_repeatable(tiny_qwen3):
    model, tokenizer = tiny_qwen3

    def fitted():
        reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
        return reranker.fit(fit_data.results(), fit_data.qrels(), k=3, max_layer=3, lr=2e-2, epochs=3, cv_folds=0,
                            verbose=False)

    aligned = fitted()
    assert aligned.fit_summary_["alignment"]["chosen_by"] == "fixed epochs"
    assert aligned.heads.weights != (1.0,) * 3, "head weights were learned"
    selected_only = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, heads=HeadSet(aligned.heads.heads))
    res = fit_data.results()
    a = aligned.transform(res).sort_values(["qid", "docno"]).score.to_numpy()
    s = selected_only.transform(res).sort_values(["qid", "docno"]).score.to_numpy()
    assert not np.allclose(a, s, atol=1e-7)
    again = fitted()
    assert again.heads == aligned.heads
    np.testing.assert_array_equal(again.transform(res).sort_values(["qid", "docno"]).score.to_numpy(), a)


def test_validation_keeps_the_best_epoch_and_transform_reproduces_it(tiny_qwen3):
    """Early stopping on validation lists: the kept adapters give, through the normal pass, the best nDCG@10."""
    import ir_measures

    model, tokenizer = tiny_qwen3
    valid_ids = ["q5", "q6"]
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
    reranker.fit(fit_data.results(["q1", "q2", "q3", "q4"]), fit_data.qrels(), fit_data.results(valid_ids),
                 fit_data.qrels(), k=3, max_layer=3, lr=2e-2, epochs=3, patience=5, verbose=False)
    info = reranker.fit_summary_["alignment"]
    assert info["chosen_by"].startswith("validation")
    assert [h["epoch"] for h in info["history"]] == [0, 1, 2, 3]
    best = max(h["valid"] for h in info["history"])
    assert info["history"][info["best_epoch"]]["valid"] == best
    run = reranker.transform(fit_data.results(valid_ids))
    qrels = fit_data.qrels(qids=valid_ids)
    value = ir_measures.calc_aggregate(
        [ir_measures.nDCG @ 10], pd.DataFrame({"query_id": qrels.qid, "doc_id": qrels.docno, "relevance": qrels.label}),
        pd.DataFrame({"query_id": run.qid, "doc_id": run.docno, "score": run.score}))[ir_measures.nDCG @ 10]
    assert value == pytest.approx(best, abs=1e-6)


def test_lora_only_keeps_unit_head_weights(tiny_qwen3):
    model, tokenizer = tiny_qwen3
    reranker = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24)
    reranker.fit(fit_data.results(), fit_data.qrels(), k=2, max_layer=3, lr=2e-2, epochs=2, cv_folds=0,
                 learn_weights=False, verbose=False)
    assert reranker.heads.weights == (1.0, 1.0)
    selected_only = HeadRank(model, tokenizer=tokenizer, max_passage_tokens=24, heads=reranker.heads)
    res = fit_data.results()
    a, b = (r.transform(res).sort_values(["qid", "docno"]).score.to_numpy() for r in (reranker, selected_only))
    assert not np.allclose(a, b, atol=1e-7)


@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_replay_equals_normal_pass_on_other_architectures(kind, qwen3_tokenizer):
    """Gemma 3 mixes sliding-window and full layers (different masks per layer type): replay must use each's own."""
    from conftest import tiny_decoder

    if kind == "gemma3":  # full layers 1 and 3 adapted; sliding layer 2 between them sees only the last 48 tokens
        from transformers import AutoModelForCausalLM, Gemma3TextConfig
        config = Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=16, vocab_size=151936, sliding_window=48,
                                  query_pre_attn_scalar=16, max_position_embeddings=40960,
                                  layer_types=["sliding_attention", "full_attention"] * 2)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32).eval()
    else:
        model = tiny_decoder(kind)
    heads = HeadSet(((0, 2), (1, 1), (3, 0)))
    adapted = attach_lora(model, AdapterConfig((1, 3), rank=4), seed=0)
    with torch.no_grad():
        for p in lora_parameters(adapted).values():  # arbitrary non-zero adapters
            p.copy_(torch.randn_like(p) * 0.3)
    replay = AttentionReplay(adapted, heads, 1, True, qwen3_tokenizer.pad_token_id)
    prompt = ListwisePrompt(qwen3_tokenizer, max_passage_tokens=24)
    query, texts = fit_data.PASSAGES["q2"]
    window = prompt.window(prompt.truncate_passages(texts)[0], prompt.query_part(query))
    item = replay.capture(window, "q2", [str(i) for i in range(6)], np.zeros(6))
    reader = AttentionReader(adapted, pad_token_id=qwen3_tokenizer.pad_token_id)
    with torch.no_grad():
        expected = reader.read([window], heads, calibrate=True).scores(torch.ones(3))[0, :6]
        torch.testing.assert_close(replay.scores(item), expected.float(), rtol=1e-4, atol=1e-6)
        base = AttentionReader(model, pad_token_id=qwen3_tokenizer.pad_token_id)
        assert not torch.allclose(base.read([window], heads).scores(torch.ones(3))[0, :6], expected, atol=1e-6)
