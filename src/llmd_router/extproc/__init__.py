"""Envoy's external-processing protocol: a sans-I/O stream, the protobuf codec, the servers."""
