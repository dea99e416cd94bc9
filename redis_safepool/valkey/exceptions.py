"""The pool's errors for valkey-py clients: inside valkey's hierarchy (and redis_safepool's)."""

from valkey.exceptions import ConnectionError, MaxConnectionsError, ValkeyError

from .. import exceptions as _base
from ..exceptions import BudgetConflictWarning

# The C core classifies connect errors with these.
from valkey.exceptions import BusyLoadingError  # noqa: F401
from valkey.exceptions import TimeoutError as ClientTimeoutError  # noqa: F401

__all__ = [
    "SafePoolError",
    "PoolTimeoutError",
    "ServerUnavailableError",
    "PoolClosedError",
    "PoolMisuseError",
    "DoubleReleaseError",
    "ForeignConnectionError",
    "BudgetConflictWarning",
]


class SafePoolError(ConnectionError, _base.SafePoolError):
    """Base of every runtime error of a valkey pool (a valkey ConnectionError)."""


class PoolTimeoutError(SafePoolError, MaxConnectionsError, _base.PoolTimeoutError):
    """No connection became free within the pool's ``timeout``."""


class ServerUnavailableError(SafePoolError, _base.ServerUnavailableError):
    """The endpoint is paused (down, loading or overloaded): failing fast."""


class PoolClosedError(SafePoolError, _base.PoolClosedError):
    """``get_connection()`` on a pool after ``close()``."""


class PoolMisuseError(ValkeyError, _base.PoolMisuseError):
    """The caller broke the pool's contract (a bug in the calling code)."""


class DoubleReleaseError(PoolMisuseError, _base.DoubleReleaseError):
    """A connection was released to its pool more than once."""


class ForeignConnectionError(PoolMisuseError, _base.ForeignConnectionError):
    """A connection was released to a pool that never handed it out."""
