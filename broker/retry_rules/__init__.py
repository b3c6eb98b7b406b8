"""Retry rules: what to do when a job attempt fails with a given error (docs/reliability.md).

``rules`` matches a failure against rules and picks the one that decides;
``defaults`` is the built-in rule set; ``rule_file`` reads and checks the
TOML file operators apply with ``pandamq retry-rules apply``. Standard
library only, no SQL: the service and the CLI both use it.
"""
