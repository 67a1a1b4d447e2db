"""Built-in task plugins, one module (and one plugin) each."""
