"""The SQL store (SQLAlchemy 2): the source of truth for jobs, sites and pilots."""
