"""Deciders: whether a disaggregated stage (prefill, encode) runs for a request."""
