"""Postgres: the schema, the named queries, the append path and the read path."""
