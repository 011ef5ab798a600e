"""videopoet.cli."""
