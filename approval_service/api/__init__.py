"""The HTTP API. Only this layer turns miaopi's errors into HTTP responses."""
