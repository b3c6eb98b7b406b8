"""The bridge to data management (DDM): dispatch datasets and subscriptions that
bring a job's inputs to its site, the callbacks that activate (or fail) the
jobs waiting on them, output registration and dataset closing, and the local
DDM (directories as storage elements, verified copies) behind a small
backend interface. See docs/ddm.md.
"""
