"""Training HeadRank: head selection and preference alignment in attention space (``HeadRank.fit``).

Modules: :mod:`.settings` (:class:`FitSettings`), :mod:`.lists` (candidate lists from frames), :mod:`.fit` (the
steps), :mod:`.pairs`, :mod:`.losses` (one loss per module), :mod:`.lora`, :mod:`.replay`, :mod:`.trainer`. What is
trained and why it is cheap (replay of cached hidden states): docs/design.md, "Training".
"""
