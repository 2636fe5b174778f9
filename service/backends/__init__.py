"""Model backends: where a merged batch is computed."""
