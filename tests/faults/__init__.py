"""Fault injection for the crash-point suite: run spoold with one `os` call made to fail or to kill it."""
