"""The built-in sources: ``files``, ``sql``, ``schema-registry`` and ``csv``.

Each module holds one source and its config; :func:`metaverse_kit.ingest.get_source` finds
them by type name, so importing a source's packages (SQLAlchemy) waits until it is used.
"""
