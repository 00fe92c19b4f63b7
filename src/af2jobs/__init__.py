"""af2jobs: AlphaFold2 structure prediction as managed jobs, on AWS or on one machine."""

__version__ = "0.1.0"
