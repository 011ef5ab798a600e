"""videopoet.pipelines: pre-tokenization of webdataset corpora (see README.md in this folder).

* :mod:`.config`     - ``PipelineConfig`` presets tiny / small / paper
* :mod:`.inputs`     - list, name and open the input shards
* :mod:`.prepare`    - validate, decode and clip samples into tokenization windows
* :mod:`.tokenize`   - the job's tokenizers (through ``videopoet.tokenizers.registry``), batched tokenization
* :mod:`.shard`      - ``assemble_shard`` (both runners end a shard there) and ``process_shard``, the unit of work
* :mod:`.errors`     - ``PipelineError`` and the reject records with their reason codes
* :mod:`.driver`     - job preparation, commit through the dataset store, summary, progress
* :mod:`.beam`, :mod:`.ray` - the two runners; :mod:`.synth` - the synthetic corpus
* :mod:`.testing`    - hostile shards for the guarantee tests
"""
