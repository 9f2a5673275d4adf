"""The daemon: its loop, the threads beside it, and how a run goes from claim to its last move."""
