"""videopoet.tokenizers."""
