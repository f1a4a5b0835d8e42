"""Reference scores from eager attention with ``output_attentions``: the slow, obvious computation."""
from contextlib import contextmanager

import torch

from pyterrier_headrank.compat import attention_configs, attention_implementation
from pyterrier_headrank.prompt import Window


@contextmanager
def eager_attention(model):
    """Run ``model`` with transformers' eager attention while inside (for ``output_attentions`` references)."""
    with attention_implementation(attention_configs(model), "eager"):
        yield


def eager_scores(model, window: Window, heads, calibrate: bool) -> torch.Tensor:
    """Per-head passage mass ``[heads, passages]`` from the full ``L x L`` eager attention of one window."""
    def mass(part):
        ids = torch.tensor([window.prefix_ids + part.ids])
        with torch.no_grad(), eager_attention(model):
            out = model(input_ids=ids, output_attentions=True)
        start = len(window.prefix_ids) + part.span[0]
        end = len(window.prefix_ids) + part.span[1]
        rows = []
        for layer, head in heads.heads:
            attention = out.attentions[layer][0, head, start:end].double().mean(0)  # mean over query tokens
            rows.append(torch.stack([attention[a:b].sum() for a, b in window.passage_spans]))
        return torch.stack(rows)

    result = mass(window.query)
    if calibrate:
        result = result - mass(window.calibration)
    return result
