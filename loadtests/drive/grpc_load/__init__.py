"""Load over gRPC: one fixed call, grpc_gen or `grpc.aio` workers, their merged histogram."""
