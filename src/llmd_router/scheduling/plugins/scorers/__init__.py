"""Scorers: rate each candidate endpoint in [0, 1] for one concern."""
