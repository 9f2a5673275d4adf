"""The web dashboard (`spoold dashboard`, SPEC §9): read straight from the spool and the logs.

An optional extra (`pip install 'spoold[dashboard]'`): Starlette, Jinja2 and uvicorn. Every action is
the operator commands' own code (spoold/spool/ops.py); nothing here talks to a daemon.
"""
