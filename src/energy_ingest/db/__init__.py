"""Connection pool, embedded server, migrations and partition upkeep."""
