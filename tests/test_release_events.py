"""Release events and token re-authentication through our pools as through redis-py's (sync and asyncio)."""

import asyncio
import inspect

import pytest
import redis
import redis.asyncio as aredis

import redis_safepool as sp
import redis_safepool.asyncio as sp_async

event = pytest.importorskip("redis.event", reason="redis-py without events (redis.event)")
token_mod = pytest.importorskip("redis.auth.token", reason="redis-py without token auth")
from redis.credentials import StreamingCredentialProvider  # noqa: E402

SYNC_POOLS = [pytest.param(redis.ConnectionPool, id="redis-py"),
              pytest.param(sp.SafeConnectionPool, id="safepool")]
ASYNC_POOLS = [pytest.param(aredis.ConnectionPool, id="redis-py"),
               pytest.param(sp_async.SafeConnectionPool, id="safepool")]


class RotatingProvider(StreamingCredentialProvider):
    """A streaming credential provider (as Entra ID's is) whose token we rotate by hand."""

    def __init__(self, user: str, password: str) -> None:
        self.credentials = (user, password)
        self._next, self._errors = [], []

    def get_credentials(self):
        return self.credentials

    async def get_credentials_async(self):
        return self.credentials

    def on_next(self, callback):
        self._next.append(callback)

    def on_error(self, callback):
        self._errors.append(callback)

    def is_streaming(self) -> bool:
        return True

    def _token(self, user: str, password: str):
        self.credentials = (user, password)
        return token_mod.SimpleToken(password, -1, -1, {"oid": user})

    def rotate(self, user: str, password: str) -> None:
        token = self._token(user, password)
        for callback in self._next:
            callback(token)

    async def rotate_async(self, user: str, password: str) -> None:
        token = self._token(user, password)
        for callback in self._next:
            result = callback(token)
            if inspect.isawaitable(result):
                await result


@pytest.fixture
def acl_server(redis_server):
    admin = redis.Redis(host=redis_server.host, port=redis_server.port)
    for user in ("alice", "bob"):
        admin.acl_setuser(user, enabled=True, passwords=[f"+{user}-pw"], keys=["*"],
                          channels=["*"], commands=["+@all"])
    return redis_server


def _whoami(pool, conn) -> bytes:
    conn.send_command("ACL", "WHOAMI")
    return conn.read_response()


@pytest.mark.parametrize("pool_class", SYNC_POOLS)
def test_rotation_reauthenticates_idle_and_checked_out_connections(pool_class, acl_server):
    provider = RotatingProvider("alice", "alice-pw")
    pool = pool_class(host=acl_server.host, port=acl_server.port, credential_provider=provider,
                      max_connections=4)
    client = redis.Redis(connection_pool=pool, credential_provider=provider)
    try:
        assert client.acl_whoami() == "alice"           # leaves one idle connection
        held = pool.get_connection()                      # ...which is now out
        spare = pool.get_connection()
        pool.release(spare)                               # one idle, one out
        assert _whoami(pool, held) == b"alice"
        provider.rotate("bob", "bob-pw")
        assert client.acl_whoami() == "bob"              # the idle one, re-authenticated
        pool.release(held)                                # the release event re-authenticates it
        again = pool.get_connection()
        assert again is held and _whoami(pool, again) == b"bob"
        pool.release(again)
        assert [client.acl_whoami() for _ in range(3)] == ["bob"] * 3
    finally:
        pool.close()


@pytest.mark.parametrize("pool_class", SYNC_POOLS)
def test_a_listener_registered_later_hears_every_release(pool_class, redis_server):
    dispatcher = event.EventDispatcher()
    pool = pool_class(host=redis_server.host, port=redis_server.port, max_connections=4,
                      event_dispatcher=dispatcher)
    client = redis.Redis(connection_pool=pool)
    heard = []

    class Listener(event.EventListenerInterface):
        def listen(self, ev):
            heard.append(ev.connection)

    try:
        client.ping()  # released before anyone listens
        dispatcher.register_listeners({event.AfterConnectionReleasedEvent: [Listener()]})
        for _ in range(3):
            client.ping()
        assert len(heard) == 3 and all(c is heard[0] for c in heard)
        with client.pipeline() as pipe:
            pipe.ping().ping().execute()
        assert len(heard) == 4
    finally:
        pool.close()


@pytest.mark.parametrize("pool_class", SYNC_POOLS)
def test_a_failing_listener_propagates_and_the_connection_is_not_reused(pool_class,
                                                                       redis_server):
    dispatcher = event.EventDispatcher()
    pool = pool_class(host=redis_server.host, port=redis_server.port, max_connections=4,
                      event_dispatcher=dispatcher)

    class Boom(event.EventListenerInterface):
        def listen(self, ev):
            raise redis.exceptions.AuthenticationError("listener failed")

    try:
        boom = Boom()
        dispatcher.register_listeners({event.AfterConnectionReleasedEvent: [boom]})
        conn = pool.get_connection()
        with pytest.raises(redis.exceptions.AuthenticationError):
            pool.release(conn)
        dispatcher.unregister_listeners({event.AfterConnectionReleasedEvent: [boom]})
        assert redis.Redis(connection_pool=pool).ping()
    finally:
        if isinstance(pool, sp.SafeConnectionPool):
            assert pool.stats()["in_use"] == 0  # the slot came back
        pool.close()


@pytest.mark.parametrize("pool_class", ASYNC_POOLS)
def test_asyncio_rotation_reauthenticates(pool_class, acl_server):
    async def main():
        provider = RotatingProvider("alice", "alice-pw")
        pool = pool_class(host=acl_server.host, port=acl_server.port,
                          credential_provider=provider, max_connections=4)
        client = aredis.Redis(connection_pool=pool, credential_provider=provider)
        try:
            assert await client.acl_whoami() == "alice"
            held = await pool.get_connection()
            spare = await pool.get_connection()
            await pool.release(spare)
            await provider.rotate_async("bob", "bob-pw")
            assert await client.acl_whoami() == "bob"
            await pool.release(held)
            again = await pool.get_connection()
            assert again is held
            await again.send_command("ACL", "WHOAMI")
            assert await again.read_response() == b"bob"
            await pool.release(again)
        finally:
            await pool.aclose()

    asyncio.run(main())


def listened_async_pool(pool_class, server):
    """An asyncio pool with a dispatcher of its own, and a listener class whose
    instances note the type of every event they hear in ``heard``."""
    dispatcher = event.EventDispatcher()
    pool = pool_class(host=server.host, port=server.port, max_connections=4,
                      event_dispatcher=dispatcher)
    heard = []

    class Listener(event.AsyncEventListenerInterface):
        async def listen(self, ev):
            heard.append(type(ev))

    return pool, dispatcher, heard, Listener


@pytest.mark.parametrize("pool_class", ASYNC_POOLS)
def test_asyncio_listener_hears_every_release(pool_class, redis_server):
    async def main():
        pool, dispatcher, heard, Listener = listened_async_pool(pool_class, redis_server)
        dispatcher.register_listeners({event.AsyncAfterConnectionReleasedEvent: [Listener()]})
        client = aredis.Redis(connection_pool=pool)
        try:
            for _ in range(3):
                await client.ping()
        finally:
            await pool.aclose()
        return heard

    assert asyncio.run(main()) == [event.AsyncAfterConnectionReleasedEvent] * 3


@pytest.mark.parametrize("pool_class", ASYNC_POOLS)
def test_asyncio_listener_registered_later_hears_every_release(pool_class, redis_server):
    """The release path keeps the listener list it saw quiet; a listener added to it
    (or a new list) is heard from the next release on."""
    async def main():
        pool, dispatcher, heard, Listener = listened_async_pool(pool_class, redis_server)
        client = aredis.Redis(connection_pool=pool)
        try:
            for _ in range(3):
                await client.ping()  # released while only the re-auth listener listens
            mapping = dispatcher._event_listeners_mapping
            listeners = mapping[event.AsyncAfterConnectionReleasedEvent]
            reauth = listeners[0]
            listeners.append(Listener())  # the same list, one more in it
            for _ in range(3):
                await client.ping()
            mapping[event.AsyncAfterConnectionReleasedEvent] = [reauth]  # quiet again
            await client.ping()
            mapping[event.AsyncAfterConnectionReleasedEvent] = [Listener()]  # as long, another
            await client.ping()
        finally:
            await pool.aclose()
        return heard

    assert asyncio.run(main()) == [event.AsyncAfterConnectionReleasedEvent] * 4


def test_no_python_call_on_release_while_nobody_listens(redis_server, monkeypatch):
    """Only redis-py's own re-auth listener, no token: the C release path calls nothing."""
    from redis_safepool import _release_events

    calls = []
    real = _release_events.on_release

    def counting(pool, conn):
        calls.append(conn)
        real(pool, conn)

    monkeypatch.setattr(_release_events, "on_release", counting)
    provider = RotatingProvider("default", "")
    pool = sp.SafeConnectionPool(host=redis_server.host, port=redis_server.port,
                                 max_connections=4)
    client = redis.Redis(connection_pool=pool, credential_provider=provider)
    try:
        for _ in range(50):
            client.ping()
        assert len(calls) == 1  # the first release learns the listener list
        held = pool.get_connection()
        provider.rotate("default", "")  # a rotation: the connection out carries a token
        pool.release(held)
        assert len(calls) == 2 and held._re_auth_token is None
        for _ in range(50):
            client.ping()
        assert len(calls) == 2
    finally:
        pool.close()
