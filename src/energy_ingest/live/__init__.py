"""Reads of the hot store: each device's newest reading."""
