"""redis-safepool: a redis-py connection pool that cannot take a Redis server down."""

from .exceptions import (
    BudgetConflictWarning,
    DoubleReleaseError,
    ForeignConnectionError,
    PoolClosedError,
    PoolMisuseError,
    PoolTimeoutError,
    SafePoolError,
    ServerUnavailableError,
)

__version__ = "0.1.0"
