"""Test settings: both Redis cache backends on SafeConnectionPool; URL and pool class from the environment."""

import os

REDIS_URL = os.environ.get("SAFEPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POOL_CLASS = os.environ.get("SAFEPOOL_TEST_POOL_CLASS", "redis_safepool.SafeConnectionPool")
MAX_CONNECTIONS = int(os.environ.get("SAFEPOOL_TEST_MAX_CONNECTIONS", "4"))

SECRET_KEY = "redis-safepool-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_project.urls"
USE_TZ = True
DATABASES = {}
INSTALLED_APPS = ["redis_safepool.django"]
MIDDLEWARE = ["redis_safepool.django.middleware.SafePoolMiddleware"]

CACHES = {
    # Django's built-in backend: calls POOL_CLASS.from_url(LOCATION, parser_class=..., **OPTIONS)
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"pool_class": POOL_CLASS, "max_connections": MAX_CONNECTIONS, "timeout": 2},
    },
    # django-redis: calls POOL_CLASS.from_url(url=..., parser_class=..., **CONNECTION_POOL_KWARGS)
    "djredis": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "CONNECTION_POOL_CLASS": POOL_CLASS,
            "CONNECTION_POOL_KWARGS": {"max_connections": MAX_CONNECTIONS, "timeout": 2},
        },
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django.server": {"level": "ERROR"}, "django.request": {"level": "CRITICAL"}},
}
