"""TorchServe archives served natively: the gateway plays TorchServe's Java front end.

Each `.mar` is extracted into a private directory and served by worker processes that run
TorchServe's own Python side (`ts.model_service_worker`, hence `ts.model_loader`,
`ts.service.Service`, `ts.context.Context` and the archive's handler, unchanged). The gateway
talks to them over a Unix socket in TorchServe's binary frame format (`frames`), forms the
batches with its own batcher, and keeps its own protocols, metrics, auth and drain. torch and
`ts` are imported only inside the worker processes.
"""
