"""Pickers: choose the target endpoints from the scored candidates."""
