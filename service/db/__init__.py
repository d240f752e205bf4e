"""Database access: the engine, the unit of work (the one commit point) and table definitions."""
