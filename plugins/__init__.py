"""Built-in plugins of the harness. Registered only through the ``harness`` entry-point group."""
