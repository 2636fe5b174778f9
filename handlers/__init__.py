"""TorchServe integration: the manifest-driven handler, `.mar` archives and a TorchServe launcher."""
