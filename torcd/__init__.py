"""torcd: the per-user workflow daemon."""
