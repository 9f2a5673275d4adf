"""The process boundary: what runs in another process, or talks to one.

Imports nothing, so a job child that imports `spoold.execution.child` pays for nothing else.
"""
