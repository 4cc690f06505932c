"""The operator's dashboard: server-rendered pages under /ui/ that read the same service functions as the API."""
