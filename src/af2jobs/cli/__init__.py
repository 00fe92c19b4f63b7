"""The `af2` command line."""
