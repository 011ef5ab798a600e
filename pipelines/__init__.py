"""videopoet.pipelines."""
