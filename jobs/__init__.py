"""The application layer, free of web and queue frameworks: request contracts, settings, job records and their
stores, admission (what may be accepted), and the runner that turns a job into a checkpoint or a template set.

`service` (HTTP, CLI) and `workers` (Celery) are adapters on top of it; it builds on `learngene` and
`templates_store` and on nothing above it (checked by the import-linter contracts in pyproject.toml).
"""
