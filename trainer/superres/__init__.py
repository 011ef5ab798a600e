"""VideoPoet's token-space super-resolution stage (paper section 3.3, appendix A.5.2).

A non-autoregressive bidirectional transformer that predicts the MAGVIT-v2 tokens of a clip at twice
the resolution from the tokens of the low-resolution clip and the caption's T5 embeddings:

* :mod:`.config` - typed configs (model, training, sampling) and presets ``tiny``, ``small``,
  ``paper_stage1`` (224x128 -> 448x256) and ``paper_stage2`` (448x256 -> 896x512);
* :mod:`.model` - the transformer: windowed self-attention over the high-resolution tokens (windows
  cycling per layer), windowed cross-attention to the low-resolution tokens, cross-attention to the
  text, factorized token embeddings and output heads;
* :mod:`.train` - the masked-token training step (noise augmentation of the low-resolution tokens,
  condition dropout) and the loop over a run directory (:mod:`videopoet.rundir`);
* :mod:`.sample` - MaskGIT decoding with a cosine schedule and classifier-free guidance on the text
  and on the low-resolution input;
* :mod:`.data` - pairs of (high-resolution tokens, low-resolution tokens, text embeddings) and
  batches that are a pure function of (seed, step): in memory (:class:`~.data.PairSet`) or read
  from a pipeline dataset built with ``sr_pairs`` (:class:`~.data.DatasetPairs`);
* :mod:`.cascade` - the stage after the LM in ``videopoet generate --sr``: the LM's video tokens ->
  MaskGIT decoding -> the 2x token grid decoded by the same MAGVIT-v2 tokenizer.

CLI: ``videopoet train --model sr`` (:mod:`videopoet.cli.train_sr`), ``videopoet generate ... --sr RUN``.
"""
