"""Celery workers and the task code they share with the embedded executor."""
