"""What the gateway serves: one interface (`ServedModel`) and its kinds.

- `tensor.TensorModel`: a processor, a dynamic batcher and a backend (our `model.json` models);
- `service.native.archive_model.ArchiveModel`: a TorchServe archive's own handler, in worker
  processes, plus the tensor way in when the archive declares tensors.

Each kind has one loader (`loader.ModelLoader`); the repository keeps versions and swaps.
"""
