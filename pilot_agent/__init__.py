"""The pilot: the agent batch systems start on worker nodes to pull and run jobs.

It imports no SQL code: only ``broker.protocol``, ``broker.topology``,
``broker.settings``, ``broker.messaging`` (with prometheus_client) and kombu,
all pure Python, so ``pandamq pilot-bundle`` can pack it into one file.
"""
