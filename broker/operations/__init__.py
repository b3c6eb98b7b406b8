"""Job operations: what the broker service's handlers and the DDM bridge both do to jobs.

Brokerage and set-up of placed attempts, activation within the sites' caps
(throttle, user caps), intake of new jobs, retries with back-off, and kills,
each in the caller's transaction. The package imports no handler (nothing of
``broker.service``) and nothing of ``ddm_bridge``: the arrows run service →
operations → store and bridge → operations → store (docs/architecture.md).
"""
