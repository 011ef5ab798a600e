"""videopoet.pipelines.synth."""
