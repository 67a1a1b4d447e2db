"""The ``harness`` command line: one module per command group, each a thin shell over a package."""
