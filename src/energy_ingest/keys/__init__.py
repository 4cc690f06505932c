"""API keys: who may write readings, read the fleet, or administer the service."""
