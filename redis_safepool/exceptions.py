"""Every error the pool raises, all inside redis-py's exception hierarchy."""

from redis.exceptions import AuthenticationError, ConnectionError, MaxConnectionsError, RedisError

# The C core classifies connect errors with the client family's own classes
# (redis_safepool.valkey.exceptions names valkey-py's).
from redis.exceptions import BusyLoadingError  # noqa: F401
from redis.exceptions import TimeoutError as ClientTimeoutError  # noqa: F401

__all__ = [
    "SafePoolError",
    "PoolTimeoutError",
    "ServerUnavailableError",
    "CredentialsRejectedError",
    "PoolClosedError",
    "PoolMisuseError",
    "DoubleReleaseError",
    "ForeignConnectionError",
    "BudgetConflictWarning",
    "HostScopeWarning",
]


class SafePoolError(ConnectionError):
    """Base of every runtime error of redis-safepool (a redis ConnectionError)."""


class PoolTimeoutError(SafePoolError, MaxConnectionsError):
    """No connection became free within the pool's ``timeout``."""


class ServerUnavailableError(SafePoolError):
    """The endpoint is paused (down, loading or overloaded): failing fast; or saturated, with
    no connection of this process to share, when the caller's timeout ended."""


class CredentialsRejectedError(ServerUnavailableError, AuthenticationError):
    """The server rejected this pool's credentials lately: failing fast until the
    next trial connection (both a redis ``AuthenticationError`` and a
    ``ConnectionError``)."""


class PoolClosedError(SafePoolError):
    """``get_connection()`` on a pool after ``close()``."""


class PoolMisuseError(RedisError):
    """The caller broke the pool's contract (a bug in the calling code)."""


class DoubleReleaseError(PoolMisuseError):
    """A connection was released to its pool more than once."""


class ForeignConnectionError(PoolMisuseError):
    """A connection was released to a pool that never handed it out."""


class BudgetConflictWarning(RuntimeWarning):
    """A pool asked for another ``max_connections`` (or ``scope``) than its endpoint's budget."""


class HostScopeWarning(RuntimeWarning):
    """``scope="host"`` could not be used (not Linux, or a shared segment that is not
    ours or not sound): the endpoint keeps a budget for this process only."""
