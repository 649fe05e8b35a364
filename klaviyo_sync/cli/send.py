"""Commands of the send stage (filled in by its module)."""
