"""The Envoy gRPC-Web gateway: one typed description (`model`), rendered to a static Envoy config (`render`)."""
