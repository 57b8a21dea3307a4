"""safe-build: build and install Python packages safely when many run at once."""

__version__ = "0.1.0"
