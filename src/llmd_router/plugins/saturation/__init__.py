"""Saturation detectors: how full the pool is, and filters that keep full endpoints out."""
