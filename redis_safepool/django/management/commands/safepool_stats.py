"""``manage.py safepool_stats``: create the configured caches' pools and print stats / explain()."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = ("Show redis-safepool stats. Touches every configured cache so its pools exist, then "
            "prints a table (default), --json, or --explain. With --from URL, prints the stats a "
            "running server exposes (redis_safepool.django.views.stats).")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--explain", action="store_true", help="explain limits, states, last failure")
        parser.add_argument("--no-touch", action="store_true", help="do not touch the caches first")
        parser.add_argument("--from", dest="source", help="URL of a running server's stats view")

    def handle(self, *args: Any, **opts: Any) -> None:
        from redis_safepool.report import all_stats, explain, format_table

        if opts["source"]:
            from redis_safepool.__main__ import fetch_stats

            stats = fetch_stats(opts["source"])
        else:
            if not opts["no_touch"]:
                self._touch_caches()
            stats = all_stats()
        if opts["json"]:
            self.stdout.write(json.dumps(stats, indent=2, sort_keys=True))
        elif opts["explain"]:
            self.stdout.write(explain(stats=stats))
        else:
            self.stdout.write(format_table(stats))

    def _touch_caches(self) -> None:
        for alias in getattr(settings, "CACHES", {}):
            try:
                caches[alias].get("redis_safepool:stats-probe")
            except Exception as exc:  # a down server is exactly what the stats should show
                self.stderr.write(f"cache {alias!r}: {type(exc).__name__}: {exc}")
