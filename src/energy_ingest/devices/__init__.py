"""The device registry: a small integer key for every meter and vehicle id."""
