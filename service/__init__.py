"""Model-serving gateway: FastAPI transport, protocol codecs, data plane, batcher, backends."""

__version__ = "0.1.0"
