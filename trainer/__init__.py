"""videopoet.trainer: the VideoPoet prefix LM, its task mixture, and the training loop.

Modules (models apart from training code; configs as typed data):

    config      TrainConfig / ModelConfig / DataConfig / MeshConfig + presets tiny, small, 300m, 1b, 8b
    model       PrefixLM (Flax Linen), prefix_lm_mask, forward, init_cache / prefill / decode_step (KV cache)
    tasks       TokenRecord -> Example for uncond, t2v, t2i, fp, i2v, inpaint, outpaint, stylize, v2a, a2v, avcont
    data        verified dataset -> Grain -> Mixture: AGD groups, curriculum, CFG dropout; batches = f(seed, step);
                DatasetMixture: several datasets by weight (each batch from one), weights changeable on resume
    sharding    (data, fsdp, tensor) mesh, logical-axis rules, multi-process initialisation
    step        frozen T5 text tower, output-only loss, AdamW + warm-up/cosine, the jitted sharded train step
    checkpoint  run directory, Orbax (params + optimizer + Grain iterator state), load_run for generation
    metrics     prefix-LM FLOPs, MFU, peak table, JSONL / TensorBoard, loss curve
    train       the loop: resume, SIGTERM checkpoint, hooks
    synthetic   learnable synthetic TokenRecords for tests and benchmarks

Generation entry points::

    run = checkpoint.load_run(RUN_DIR)                 # cfg, model, float32 params, step, run.json info
    ex = tasks.build("t2v", record, data.task_options(run.cfg))   # the training layout of a task
    cache = model.init_cache(run.cfg.model, batch, length)
    logits, cache = model.prefill(run.model, run.params, tokens, valid, prefix_len, cache, text_emb, text_index)
    logits, cache = model.decode_step(run.model, run.params, token, pos, cache)
"""
