"""Deployment helpers (packaging and launching); the files beside them are deployment configs."""
