"""Commands of the business stage (filled in by its module)."""
