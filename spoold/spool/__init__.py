"""The spool's files and how they move: every write to a spool goes through this package."""
