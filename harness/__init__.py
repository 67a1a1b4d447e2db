"""A plugin-based benchmarking harness for recurrent sequence models."""

from harness.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
