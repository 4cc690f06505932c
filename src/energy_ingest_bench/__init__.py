"""`energy-ingest-bench`: the ingest and analytics benchmarks of energy-ingest.

A separate package so the service never loads it: the benchmarks import the service (to start it and
to prepare its database), never the other way round, and their own dependencies are the `bench` extra.
"""
