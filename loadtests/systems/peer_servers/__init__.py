"""Small servers that run inside the peer venvs (`loadtests/.peers/<peer>`), not the project's.

Each one serves the model store's `model.onnx` files with ONNX Runtime, set up like the raw
limit's sessions (ONNX Runtime's defaults, full graph optimization), and reads only `model.json`
(plain JSON: the project is not installed there). They import nothing from `service` or `loadtests`.
"""
