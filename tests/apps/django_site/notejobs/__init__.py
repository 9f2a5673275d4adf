"""The job namespace of the test Django project."""
