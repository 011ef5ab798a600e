"""videopoet.infra."""
