"""Brokerage: which site each job goes to, and why the others were skipped."""
