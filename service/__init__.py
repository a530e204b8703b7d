"""The service's front ends: the HTTP API (`service.api`), the Python client and the `learngene` CLI."""
