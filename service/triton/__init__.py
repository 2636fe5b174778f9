"""Triton model repositories: `config.pbtxt` read with Triton's own protobuf, the layout of a
model folder, version policies, what we cannot serve, the configuration completed from the
model file, and the typed view the serving side uses.

Nothing is imported here: take each name from its module (`service.triton.resolve` is the
entry point). onnxruntime and torch are imported only inside the functions that read models.
"""
