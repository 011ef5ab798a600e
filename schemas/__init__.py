"""videopoet.schemas."""
