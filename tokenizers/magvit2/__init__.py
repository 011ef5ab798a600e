"""videopoet.tokenizers.magvit2."""
