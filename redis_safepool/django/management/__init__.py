"""Management commands of redis_safepool.django."""
