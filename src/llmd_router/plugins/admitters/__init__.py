"""Admitters: refuse a request before it is scheduled."""
