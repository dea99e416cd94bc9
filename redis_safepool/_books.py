"""What redis-py and other libraries read on a pool, as views of the C core's books."""

from __future__ import annotations

from typing import Any, List, Set


class CoreBooks:
    """Mixin for pools built on ``_core.PoolCore`` (sync and asyncio).

    redis-py's own ``__init__``/``reset`` assign ``_available_connections``
    and ``_in_use_connections``; here they are read-only views of the
    records the C core keeps, so assignments are ignored.
    """

    __slots__ = ()

    @property
    def _available_connections(self) -> List[Any]:
        return self._idle_list()

    @_available_connections.setter
    def _available_connections(self, value: Any) -> None:
        pass

    @property
    def _in_use_connections(self) -> Set[Any]:
        return set(self._in_use_list())

    @_in_use_connections.setter
    def _in_use_connections(self, value: Any) -> None:
        pass

    @property
    def _created_connections(self) -> int:
        return len(self._idle_list()) + len(self._in_use_list())

    def _get_free_connections(self) -> List[Any]:
        return self._idle_list()

    def _get_in_use_connections(self) -> Set[Any]:
        return set(self._in_use_list())

    def owns_connection(self, connection: Any) -> bool:
        return self._owns(connection)

    def set_retry(self, retry: Any) -> None:
        self.connection_kwargs.update({"retry": retry})
        for connection in self._idle_list() + self._in_use_list():
            connection.retry = retry
