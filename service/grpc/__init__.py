"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (Triton's superset
of KServe's `grpc_predict_v2.proto`), the standard health service and server reflection.

The wire definitions are the generated modules `tritonclient[grpc]` ships
(`tritonclient.grpc.service_pb2`, `service_pb2_grpc`); no `.proto` is kept here. To move to a
newer protocol revision, bump tritonclient (and protobuf within its pin) in `constraints.txt`.
"""
