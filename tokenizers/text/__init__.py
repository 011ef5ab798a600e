"""videopoet.tokenizers.text."""
