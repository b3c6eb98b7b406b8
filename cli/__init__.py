"""The ``pandamq`` command."""
