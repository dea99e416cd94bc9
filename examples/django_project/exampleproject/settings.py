"""Example settings: the one-line change is OPTIONS["pool_class"] on the cache."""

import os

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"
USE_TZ = True
DATABASES = {}
INSTALLED_APPS = ["redis_safepool.django"]  # safepool_stats command, system check, SAFEPOOL settings
MIDDLEWARE = ["redis_safepool.django.middleware.SafePoolMiddleware"]  # Redis down -> 503 JSON

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "pool_class": "redis_safepool.SafeConnectionPool",
            "max_connections": 20,  # process-wide budget for this server
            "timeout": 2,  # seconds to wait for a free connection
        },
    },
    # django-redis instead:
    # "default": {
    #     "BACKEND": "django_redis.cache.RedisCache",
    #     "LOCATION": REDIS_URL,
    #     "OPTIONS": {"CONNECTION_POOL_CLASS": "redis_safepool.SafeConnectionPool",
    #                 "CONNECTION_POOL_KWARGS": {"max_connections": 20, "timeout": 2}},
    # },
}

SAFEPOOL = {"pool_warn_threshold": 32, "leak_threshold": 10}  # redis_safepool.observe settings

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # the core logs one line per endpoint state change (ready -> paused ...)
    "loggers": {"redis_safepool": {"handlers": ["console"], "level": "INFO"}},
}
