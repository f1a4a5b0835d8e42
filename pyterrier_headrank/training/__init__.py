"""Training HeadRank: head selection and preference alignment in attention space (``HeadRank.fit``).

Modules: :mod:`.settings` (:class:`FitSettings`), :mod:`.lists` (candidate lists from frames), :mod:`.fit` (the
steps), :mod:`.pairs`, :mod:`.losses` (one loss per module), :mod:`.lora`, :mod:`.replay`, :mod:`.trainer`.

What is trained, and how (the design :meth:`HeadRank.fit` uses):

* **Score.** A passage's score is the weighted sum over the selected heads of the calibrated attention mass that the
  query pays to it (exactly what :class:`HeadRank` computes at inference).
* **Loss.** ``L = pairwise + Omega``. ``pairwise`` is a Bradley-Terry (logistic) loss over preference pairs,
  ``-log sigmoid(beta * (s_w - s_l) / scale)``, optionally relative to the frozen starting model (DPO style:
  ``(s_w - s_l) - (s0_w - s0_l)``). ``Omega(s) = gamma * H(p) - eta * Var(s_mid)`` with ``p = softmax(s / scale)``
  over the candidate list and ``s_mid`` the (scaled) scores of the first stage's middle zone (see
  :func:`middle_zone`). ``scale`` is the standard deviation of the list's scores under the starting model, so that
  ``beta``, ``gamma`` and ``eta`` are unit-free and mean the same for every model and list length.
* **Pairs** (:func:`preference_pairs`): adjacent relevance levels present in the list (grade g over the next lower
  grade present; binary: relevant over irrelevant), plus each relevant passage over the ``hard_negatives``
  highest-scored passages of the lowest grade; hardest first (most wrongly ordered, then nearest ties), capped.
* **Parameters.** Optionally the head weights (``learn_weights``: how much each selected head counts, a linear
  combination of the heads' scores saved in the head set), and peft LoRA adapters on the attention projections
  (``q_proj``, ``k_proj``) of the ``adapt_layers`` deepest layers that hold selected heads. The base weights stay
  frozen and are shared with the loaded model (the adapted model is a shallow copy, so a fitted reranker does not
  change other rerankers using the same weights).
* **Cheap training on cached states.** Nothing below the first adapted layer changes, so its input hidden states
  (and the masks and rotary embeddings the decoder hands every layer) are captured once per training list with a
  forward pre-hook (``with_kwargs=True``) during one frozen pass, and every training step replays only the layers
  from the first adapted layer to the deepest selected one (the last one only up to its attention), with the same
  single-pass layout (:mod:`.layout`) and the same attention reading as inference. Scores of the selected heads
  below the first adapted layer are constants taken from that pass. Nothing above the deepest selected layer runs,
  in training or at inference, and the replayed scores equal those of the adapted model's normal pass."""
