"""Choosing endpoints for requests: contracts in ``framework``, implementations in ``plugins``."""
