"""Data producers: per-request data that filters and scorers read."""
