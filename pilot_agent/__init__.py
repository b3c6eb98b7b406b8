"""The pilot: the agent batch systems start on worker nodes to pull and run jobs.

It imports no SQL code: only ``broker.protocol``, ``broker.topology``,
``broker.messaging`` and kombu.
"""
