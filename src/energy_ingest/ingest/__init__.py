"""HTTP ingest route, group-commit writer and write SQL."""
