"""Profile handlers: which scheduling profiles run, and how their results combine."""
