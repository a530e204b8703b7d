"""The Celery worker's entry point: `celery -A workers.main worker -Q inherit,condense` (or `learngene worker`).

The only module that builds the Celery application at import, from the environment's settings.
"""

from jobs.settings import get_settings
from workers.celery_app import create_celery

app = create_celery(get_settings())
