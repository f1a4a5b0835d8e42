"""Training HeadRank: head selection and preference alignment in attention space (``HeadRank.fit``).

Modules: :mod:`.settings` (:class:`FitSettings`), :mod:`.lists` (graded candidate lists), :mod:`.fit` (the steps),
:mod:`.pairs`, :mod:`.losses` (one loss per module), :mod:`.replay`, :mod:`.trainer`, :mod:`.epochs` (how many
epochs: validation, cross-fitting or fixed); the LoRA adapters it trains
are :mod:`pyterrier_headrank.lora`. What is trained and why it is cheap (replay of cached hidden states):
docs/design.md, "Training".
"""
