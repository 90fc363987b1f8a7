"""avatar.v1 as protoc writes it (session_pb2, session_pb2_grpc and what session.proto imports), generated when the
package is built from the repository's protos/ (build_protos.py); never edited, never committed. The only copy of
these modules: the repository's server and CLI import them from here too."""
