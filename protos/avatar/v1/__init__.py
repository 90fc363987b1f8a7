"""avatar.v1: generated protobuf messages and gRPC stubs. Import e.g. `from avatar.v1 import session_pb2_grpc`."""
