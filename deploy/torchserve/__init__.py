"""TorchServe tooling: build `.mar` archives, start a real TorchServe, run it behind the gateway."""
