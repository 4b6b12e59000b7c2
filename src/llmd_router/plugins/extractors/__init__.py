"""Extractors: turn what a data source fetched into an endpoint's signals."""
