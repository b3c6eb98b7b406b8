"""The lifecycle benchmark (`pandamq bench`, `benchmarks/lifecycle.py`)."""
