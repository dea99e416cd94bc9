"""Example Django project using redis-safepool."""
