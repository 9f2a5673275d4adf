"""The job namespace of the test Flask app."""
