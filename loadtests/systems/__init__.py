"""The systems under test: our gateway, TorchServe and the peers, how each is started and what
each is loaded with; the raw in-process limit; the processes' memory and the gateway's metrics."""
