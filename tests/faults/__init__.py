"""Fault tests: real `energy-ingest serve` processes under load, killed, stopped, and cut off from
their database; then what was acknowledged is compared with what is stored.

`python -m tests.faults.report` runs the same scenarios and writes docs/reliability.md.
"""
