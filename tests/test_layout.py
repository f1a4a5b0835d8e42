"""The single-pass layout: where the passages, the query part and the calibration part sit, and who sees whom."""
import torch

from pyterrier_headrank.layout import CALIBRATION, PAD, PASSAGES, QUERY, Layout
from pyterrier_headrank.prompt import ListwisePrompt


def _windows(tokenizer):
    prompt = ListwisePrompt(tokenizer, max_passage_tokens=16)
    long = prompt.window(["cats purr", "dogs bark loudly at night", "fish swim"], prompt.query_part("why do cats purr"))
    short = prompt.window(["tea"], prompt.query_part("tea?"))
    return long, short


def test_parts_positions_and_padding(qwen3_tokenizer):
    long, short = _windows(qwen3_tokenizer)
    layout = Layout.build([long, short], calibrate=True, pad_token_id=0)
    width = layout.prefix_width
    assert width == len(long.prefix_ids) > len(short.prefix_ids)
    for row, window in enumerate((long, short)):
        parts, positions = layout.parts[row].tolist(), layout.positions[row].tolist()
        passages = [c for c in range(width) if parts[c] == PASSAGES]
        assert passages == list(range(width - len(window.prefix_ids), width)), "passages are left-padded to one edge"
        assert [positions[c] for c in passages] == list(range(len(window.prefix_ids)))
        query = [c for c, p in enumerate(parts) if p == QUERY]
        calibration = [c for c, p in enumerate(parts) if p == CALIBRATION]
        assert query[0] == width and calibration[0] == query[-1] + 1
        assert [positions[c] for c in query] == list(range(len(window.prefix_ids), len(window.prefix_ids) + len(query)))
        assert positions[calibration[0]] == positions[query[0]], "both parts continue the passages"
        assert layout.ids[row, query].tolist() == window.query.ids
        assert layout.ids[row, calibration].tolist() == window.calibration.ids
        assert not layout.valid[row, [c for c, p in enumerate(parts) if p == PAD]].any()
    assert layout.rows_per_window == 2
    assert torch.allclose(layout.query_weights.sum(-1), torch.ones(2, 2)), "a mean over each text's tokens"


def test_query_and_calibration_never_see_each_other(qwen3_tokenizer):
    long, short = _windows(qwen3_tokenizer)
    layout = Layout.build([long, short], calibrate=True, pad_token_id=0)
    mask = layout.suffix_mask()[:, 0]  # [B, S, T]
    width = layout.prefix_width
    for row in range(2):
        parts, positions, valid = layout.parts[row], layout.positions[row], layout.valid[row]
        for s in range(layout.suffix_width):
            me = int(parts[width + s])
            seen = mask[row, s]
            if me == PAD:
                assert torch.equal(seen, valid & (parts == PASSAGES)), "padding rows see the passages only"
                continue
            expected = valid & ((parts == PASSAGES) | ((parts == me) & (positions <= positions[width + s])))
            assert torch.equal(seen, expected), f"row {row}, suffix column {s}"
            other = CALIBRATION if me == QUERY else QUERY
            assert not seen[parts == other].any()


def test_sliding_window_counts_positions_not_columns(qwen3_tokenizer):
    long, _ = _windows(qwen3_tokenizer)
    layout = Layout.build([long], calibrate=True, pad_token_id=0)
    window = 4
    mask = layout.suffix_mask(window)[0, 0]
    full = layout.suffix_mask()[0, 0]
    q_pos = layout.positions[0, layout.prefix_width:, None]
    k_pos = layout.positions[0, None, :]
    is_pad = layout.parts[0, layout.prefix_width:, None] == PAD
    assert torch.equal(mask, torch.where(is_pad, full, full & (q_pos - k_pos < window)))
    calibration_first = (layout.parts[0] == CALIBRATION).nonzero()[0, 0] - layout.prefix_width
    assert mask[calibration_first].sum() == 1 + (window - 1), "itself and the last window-1 passage tokens"


def test_without_calibration_there_is_one_part(qwen3_tokenizer):
    long, short = _windows(qwen3_tokenizer)
    layout = Layout.build([long, short], calibrate=False, pad_token_id=0)
    assert layout.rows_per_window == 1
    assert not (layout.parts == CALIBRATION).any()
