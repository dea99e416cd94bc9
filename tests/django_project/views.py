"""Views that use the cache, so Redis errors surface through the middleware."""

from django.core.cache import caches
from django.http import JsonResponse


def cache_key(request, alias, key):
    """GET ?set=V stores V; plain GET reads the key back."""
    cache = caches[alias]
    if "set" in request.GET:
        cache.set(key, request.GET["set"], timeout=60)
    return JsonResponse({"key": key, "value": cache.get(key)})


def hit(request, alias):
    """Atomically count a hit in Redis and return the new count."""
    cache = caches[alias]
    key = f"hits:{alias}"
    cache.add(key, 0, timeout=None)
    return JsonResponse({"hits": cache.incr(key)})


def boom(request):
    """A non-Redis error: must stay a 500."""
    raise ValueError("not a redis problem")
