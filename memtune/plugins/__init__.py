"""Built-in memory-management techniques, each a plugin on the public hooks."""
