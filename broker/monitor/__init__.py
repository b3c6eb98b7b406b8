"""The monitor: what operators read about jobs, sites, tasks and errors (web, top, errors)."""
