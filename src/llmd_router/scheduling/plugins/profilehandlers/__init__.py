"""Profile handlers and the deciders they consult: which scheduling profiles run."""
