"""Filters: keep the candidate endpoints that may serve a request."""
