"""The built-in cell and task plugins, registered through the ``harness`` entry-point group like any
third-party plugin."""
