"""Object storage by URL (s3://bucket/prefix): the client the template store, checkpoints and data share."""
