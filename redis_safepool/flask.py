"""Flask extension: one SafeConnectionPool per app from config, a shared client, and 503s for pool errors."""

from __future__ import annotations

import weakref
from typing import Any, Dict, Optional, Type

import redis

from ._http import error_body, retry_after_header, unavailable_types
from ._redact import secrets_of

__all__ = ["SafePool", "EXTENSION_KEY"]

EXTENSION_KEY = "safepool"
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def _close_pool(pool: Any) -> None:
    """Close a pool at app shutdown/collection; never raises."""
    try:
        close = getattr(pool, "close", None) or pool.disconnect
        close()
    except Exception:  # pragma: no cover - best effort at interpreter exit
        pass


class SafePool:
    """``SafePool(app)`` or ``SafePool()`` + ``init_app(app)``.

    Config: ``REDIS_URL`` (default redis://127.0.0.1:6379/0),
    ``REDIS_MAX_CONNECTIONS``, ``REDIS_POOL_TIMEOUT`` (seconds, None = forever),
    ``REDIS_RETRY_AFTER`` (seconds in the 503's Retry-After, default 1),
    ``REDIS_503_ON_CONNECTION_ERRORS`` (default True: also map redis-py's own
    ConnectionError/TimeoutError, e.g. a reset mid-command, to 503).

    The client is ``app.extensions["safepool"]`` and ``ext.client`` (inside an
    app context, the current app's; outside one, the app last initialised).
    The pool is closed by ``ext.close(app)``, at interpreter exit, or when the
    app is garbage collected. For Flask-Caching use
    ``CACHE_OPTIONS=ext.cache_options()`` without ``CACHE_REDIS_URL``.
    """

    def __init__(
        self,
        app: Any = None,
        *,
        pool_class: Optional[Type[Any]] = None,
        client_class: Type[Any] = redis.Redis,
        **pool_kwargs: Any,
    ) -> None:
        self._pool_class = pool_class
        self._client_class = client_class
        self._pool_kwargs = pool_kwargs
        self._default_client: Optional[Any] = None
        if app is not None:
            self.init_app(app)

    # ------------------------------------------------------------------ setup

    def _pool_args(self, config: Any) -> Dict[str, Any]:
        kwargs = dict(self._pool_kwargs)
        if config.get("REDIS_MAX_CONNECTIONS") is not None:
            kwargs["max_connections"] = int(config["REDIS_MAX_CONNECTIONS"])
        if "REDIS_POOL_TIMEOUT" in config:
            t = config["REDIS_POOL_TIMEOUT"]
            kwargs["timeout"] = None if t is None else float(t)
        return kwargs

    def init_app(self, app: Any) -> None:
        """Create the app's pool and client, register the 503 handler and the cleanup."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("redis_safepool.flask.SafePool is already initialised on this app")
        pool_class = self._pool_class
        if pool_class is None:
            from . import SafeConnectionPool

            pool_class = SafeConnectionPool
        url = app.config.get("REDIS_URL") or DEFAULT_URL
        pool = pool_class.from_url(url, **self._pool_args(app.config))
        client = self._client_class(connection_pool=pool)
        app.extensions[EXTENSION_KEY] = client
        self._default_client = client

        handled = unavailable_types(app.config.get("REDIS_503_ON_CONNECTION_ERRORS", True))
        headers = {"Retry-After": retry_after_header(app.config.get("REDIS_RETRY_AFTER", 1))}

        secrets = secrets_of(getattr(pool, "connection_kwargs", None))

        def handle(exc: BaseException) -> Any:
            from flask import jsonify

            body = error_body(exc, secrets)
            app.logger.warning("redis unavailable, answering 503: %s: %s", body["type"], body["detail"])
            return jsonify(body), 503, headers

        for cls in handled:
            app.register_error_handler(cls, handle)
        app.teardown_appcontext(self._teardown)
        weakref.finalize(app, _close_pool, pool)

    @staticmethod
    def _teardown(exc: Optional[BaseException]) -> None:
        # Commands release their connection themselves; here we only surface leaks promptly.
        from .observe import check_leaks

        check_leaks()

    # --------------------------------------------------------------- access

    def _client_for(self, app: Any = None) -> Any:
        if app is None:
            from flask import current_app, has_app_context

            if has_app_context():
                app = current_app
        if app is not None:
            try:
                return app.extensions[EXTENSION_KEY]
            except KeyError:
                raise RuntimeError("SafePool.init_app(app) was not called for this app") from None
        if self._default_client is None:
            raise RuntimeError("SafePool has no app: call SafePool(app) or init_app(app)")
        return self._default_client

    @property
    def client(self) -> Any:
        """The redis.Redis client of the current app (shares the app's pool)."""
        return self._client_for()

    @property
    def pool(self) -> Any:
        """The current app's SafeConnectionPool."""
        return self._client_for().connection_pool

    def get_client(self, app: Any = None) -> Any:
        return self._client_for(app)

    def cache_options(self, app: Any = None, **extra: Any) -> Dict[str, Any]:
        """``CACHE_OPTIONS`` for Flask-Caching's RedisCache sharing this pool."""
        return {"connection_pool": self._client_for(app).connection_pool, **extra}

    def stats(self, app: Any = None) -> Dict[str, Any]:
        pool = self._client_for(app).connection_pool
        fn = getattr(pool, "stats", None)
        return fn() if fn is not None else {}

    def close(self, app: Any = None) -> None:
        """Close the app's pool now and forget the client (idempotent)."""
        if app is None:
            from flask import current_app, has_app_context

            app = current_app._get_current_object() if has_app_context() else None  # type: ignore[attr-defined]
        client: Any = app.extensions.pop(EXTENSION_KEY, None) if app is not None else self._default_client
        if client is None:
            return
        if client is self._default_client:
            self._default_client = None
        _close_pool(client.connection_pool)
