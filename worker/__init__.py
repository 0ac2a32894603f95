"""Celery app and the training task."""
