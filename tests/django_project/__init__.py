"""A minimal Django project for tests/test_django.py (cache-backed views, SafePool middleware)."""
