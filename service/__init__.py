"""The model-initialization service's front ends: the command line now, the HTTP API in a later issue."""
