"""The HTTP edge: app assembly helpers, problem+json, authentication, parameters, OpenAPI, health."""
