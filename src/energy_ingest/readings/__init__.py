"""Reading types, validation, and JSON/NDJSON decoding."""
