"""The parts of scripts/gen_docs.py: one module per generated page kind, and the markdown they share."""
