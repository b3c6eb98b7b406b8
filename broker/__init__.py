"""pandamq's central service: jobs, state machine, SQL store, claims, events.

This package's top level imports nothing heavy: the pilot imports
``broker.protocol``, ``broker.topology`` and ``broker.messaging`` without
needing SQLAlchemy.
"""
