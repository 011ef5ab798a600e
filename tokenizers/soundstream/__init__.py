"""videopoet.tokenizers.soundstream."""
