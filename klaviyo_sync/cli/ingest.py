"""Commands of the ingest stage (filled in by its module)."""
