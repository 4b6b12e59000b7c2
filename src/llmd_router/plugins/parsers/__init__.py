"""Parsers: request bodies into InferenceRequests, chosen by request path."""
