"""videopoet.pipelines: pre-tokenization of webdataset corpora (see README.md in this folder).

* :mod:`.webdataset` - hardened streaming tar reader (samples or per-sample rejects)
* :mod:`.media`      - probe, decord clip decode at 8 fps + resize/crop, audio, images
* :mod:`.config`     - ``PipelineConfig`` presets tiny / small / paper
* :mod:`.stages`     - runner-agnostic stages; ``process_shard`` is the unit of work
* :mod:`.driver`     - job preparation, commit through the dataset store, summary, progress
* :mod:`.beam`, :mod:`.ray` - the two runners; :mod:`.synth` - the synthetic corpus
* :mod:`.testing`    - hostile shards for the guarantee tests
"""
