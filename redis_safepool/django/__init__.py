"""Django integration: add "redis_safepool.django" to INSTALLED_APPS and SafePoolMiddleware to MIDDLEWARE."""
