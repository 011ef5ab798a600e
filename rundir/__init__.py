"""Run directories shared by every training loop (MAGVIT-v2, SoundStream, the prefix LM).

One place for what a loop writes beside its weights, so the three loops cannot drift apart:

* :mod:`.checkpoints` - the Orbax manager, save and restore (full or a subtree such as the EMA weights);
* :mod:`.record` - the config record ``config.yaml`` / ``config.json`` and the resume check against it;
* :mod:`.metrics` - ``metrics.jsonl`` + TensorBoard events and the loss-curve PNG;
* :mod:`.loop` - :class:`~.loop.Run`: progress bar, stop conditions (SIGTERM, a time limit, a hook's
  request; each saves before stopping) and hooks called every N steps with a :class:`~.loop.StepInfo`.

Nothing here imports a model, a tokenizer or the trainer: tokenizers read their run directories through
this package without importing their own training modules.
"""
