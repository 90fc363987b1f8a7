"""avatar.v1, the server's own part: the internal services' messages and gRPC stubs (llm_pb2, packager_pb2,
*_pb2_grpc), e.g. `from avatar.v1 import tts_pb2_grpc`. The public API's modules (session_pb2, session_pb2_grpc,
tts_pb2, video_pb2, media_pb2) are the client package's: `from infinitetalk_live_client.avatar.v1 import
session_pb2`. See protos/generate.py."""
