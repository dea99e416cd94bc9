"""Middleware turning Redis availability errors (SafePoolError, ...) raised by views into 503 JSON."""

from __future__ import annotations

import logging
from typing import Any, Optional

from django.conf import settings
from django.http import JsonResponse
from django.utils.deprecation import MiddlewareMixin

from .._http import error_body, find_unavailable, retry_after_header

logger = logging.getLogger("redis_safepool.django")


def unavailable_response(exc: BaseException) -> JsonResponse:
    """The 503 JSON response (with Retry-After) for an availability error."""
    response = JsonResponse(error_body(exc), status=503)
    response["Retry-After"] = retry_after_header(getattr(settings, "SAFEPOOL_RETRY_AFTER", 1))
    return response


class SafePoolMiddleware(MiddlewareMixin):
    """Maps ``redis_safepool.SafePoolError`` (ServerUnavailableError, PoolTimeoutError, ...)
    to ``503`` with a JSON body and ``Retry-After``, also when django-redis wraps it in
    ``ConnectionInterrupted``. With ``SAFEPOOL_503_ON_CONNECTION_ERRORS = True`` (default)
    redis-py's own ConnectionError/TimeoutError map to 503 too. Works sync and async.
    """

    def process_exception(self, request: Any, exception: BaseException) -> Optional[JsonResponse]:
        include = getattr(settings, "SAFEPOOL_503_ON_CONNECTION_ERRORS", True)
        exc = find_unavailable(exception, include)
        if exc is None:
            return None
        body = error_body(exc)
        logger.warning("redis unavailable, answering 503 for %s: %s: %s",
                       getattr(request, "path", "?"), body["type"], body["detail"])
        return unavailable_response(exc)
