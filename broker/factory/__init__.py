"""The pilot factory: keeps every site it serves supplied with pilots, through a batch system.

Standard library and SQLAlchemy; batch systems behind ``submitter.Submitter``,
one module each in ``submitters/``.
"""
