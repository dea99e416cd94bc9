"""A view that uses the cache: a page-view counter."""

from django.core.cache import cache
from django.http import JsonResponse


def index(request):
    cache.add("example:views", 0, timeout=None)
    return JsonResponse({"views": cache.incr("example:views")})
