"""Adapters for running on one machine: SQLite records, a directory of artifacts."""
