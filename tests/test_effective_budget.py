"""pool.max_connections is the endpoint's budget in force; the value asked for stays visible."""

import asyncio

import pytest

import redis_safepool as sp
import redis_safepool.asyncio as spa


@pytest.mark.usefixtures("no_checker")
def test_max_connections_is_the_effective_budget(server_url, make_pool):
    first = make_pool(server_url, max_connections=2, timeout=0)
    with pytest.warns(sp.BudgetConflictWarning):
        second = make_pool(server_url, max_connections=10, timeout=0)
    assert second.max_connections == 2 == second.stats()["max_connections"]
    assert second.requested_max_connections == 10
    assert first.requested_max_connections == 2
    # repr keeps redis-py's shape (tools parse it): the figures live in the attributes
    assert "max_connections" not in repr(second)
    sp.configure(second, max_connections=3)  # an explicit change shows in every pool
    assert first.max_connections == second.max_connections == 3
    with pytest.warns(sp.BudgetConflictWarning, match="asked for 10"):
        second.reset()  # rebinding asks for its own value again, not the one it shows
    assert second.requested_max_connections == 10


@pytest.mark.usefixtures("no_checker")
def test_asyncio_pool_shows_the_effective_budget(server_url, make_pool):
    make_pool(server_url, max_connections=2)

    async def main():
        with pytest.warns(sp.BudgetConflictWarning):
            pool = spa.SafeConnectionPool.from_url(server_url, max_connections=5)
        assert (pool.max_connections, pool.requested_max_connections) == (2, 5)
        await pool.aclose()

    asyncio.run(main())
