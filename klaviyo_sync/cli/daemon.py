"""Commands of the daemon stage (filled in by its module)."""
