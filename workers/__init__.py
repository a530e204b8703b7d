"""The Celery adapter: the application and its tasks (`celery_app`), the worker entry point (`main`)."""
