"""videopoet.trainer."""
