"""Scheduler implementations."""
