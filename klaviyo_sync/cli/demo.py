"""Commands of the demo stage (filled in by its module)."""
