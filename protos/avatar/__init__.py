"""avatar API packages generated from protos/ (see protos/generate.py)."""
