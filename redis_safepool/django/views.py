"""Optional views: ``stats`` (JSON of redis_safepool.stats()) and ``metrics`` (Prometheus text)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse


def stats(request: Any) -> JsonResponse:
    """All endpoints' stats of this process; `python -m redis_safepool stats --from URL` reads it."""
    from ..report import all_stats

    return JsonResponse(all_stats())


def metrics(request: Any) -> HttpResponse:
    """Prometheus exposition (needs prometheus_client)."""
    from ..prometheus import exposition

    return HttpResponse(exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")
