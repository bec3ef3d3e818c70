"""The version of flowtopo, written once (pyproject.toml and ``flowtopo.__version__`` read it)."""

__version__ = "0.1.0"
