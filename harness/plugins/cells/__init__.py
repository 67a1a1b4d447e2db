"""Built-in recurrent cells, one module (and one plugin) each."""
