"""videopoet.infra: running the trainer and the pipelines on clusters.

* :mod:`.launch` - the launch contract: a scheduler's environment -> ``jax.distributed`` + run identity;
* :mod:`.request` - what ``videopoet submit`` is asked for, and the command every host runs;
* :mod:`.targets` - one module per scheduler (local, slurm, ray, gke, tpu-vm, dataflow, flink, spark).
"""
