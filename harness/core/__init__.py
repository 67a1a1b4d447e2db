"""The plugin core: the cell and task interfaces, hook specifications, registries, plugin loading,
and the small pieces every layer shares (errors, strict configs, vocabularies, safe file I/O)."""
