"""HTTP transport: FastAPI routes that only speak HTTP and call the data plane."""
