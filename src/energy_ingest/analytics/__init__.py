"""Energy analytics over the cold history."""
