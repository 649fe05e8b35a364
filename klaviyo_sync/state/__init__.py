"""The state database: the queue, checkpoints, order sync state, suppressions, audit."""
