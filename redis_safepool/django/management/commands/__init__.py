"""The safepool_stats command."""
