"""channels-redis layers on the safe pool against a real redis-server: direct messages, groups
and the pubsub layer, from two layers on two event loops at once within one budget."""

import asyncio
import threading

import pytest
from process_clients import PeakClients

pytest.importorskip("channels_redis")

import redis_safepool as sp  # noqa: E402
from redis_safepool.channels import RedisChannelLayer, RedisPubSubChannelLayer  # noqa: E402

CHANNELS = 8
ROUNDS = 3
LOOPS = 2
BUDGET = LOOPS + 1  # each loop's receive (or subscription) and a send
NAME = "safepool-channels"


def _hosts(redis_server):
    return [{"address": redis_server.url, "max_connections": BUDGET, "timeout": 10,
             "client_name": NAME}]


async def _exchange(layer, tag):
    """Direct messages to CHANNELS channels and a group message to all of them, ROUNDS times."""
    channels = [await layer.new_channel() for _ in range(CHANNELS)]
    group = f"room-{tag}"
    for channel in channels:
        await layer.group_add(group, channel)
    for round_ in range(ROUNDS):
        sends = [layer.send(c, {"type": "direct", "n": i, "round": round_})
                 for i, c in enumerate(channels)]
        await asyncio.gather(*sends)
        got = [await asyncio.wait_for(layer.receive(c), 10) for c in channels]
        assert [(m["n"], m["round"]) for m in got] == [(i, round_) for i in range(CHANNELS)]
        await layer.group_send(group, {"type": "group", "round": round_})
        got = [await asyncio.wait_for(layer.receive(c), 10) for c in channels]
        assert [m["round"] for m in got] == [round_] * CHANNELS
    for channel in channels:
        await layer.group_discard(group, channel)
    pools = _pools(layer)
    await layer.flush()
    return pools


def _pools(layer):
    """The pools the layer made on the running loop (each loop layer has its own)."""
    inner = layer._get_layer() if isinstance(layer, RedisPubSubChannelLayer) else None
    if inner is not None:
        return [shard._redis.connection_pool for shard in inner._shards if shard._redis]
    loop_layer = layer._layers[asyncio.get_running_loop()]
    return [client.connection_pool for client in loop_layer._connections.values()]


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
def test_layers_on_two_loops_share_one_budget(redis_server, layer_class):
    peak = PeakClients(redis_server, NAME)
    results, errors = [], []

    def run(tag):
        try:
            layer = layer_class(hosts=_hosts(redis_server), prefix=f"safepool-{tag}")
            results.append(asyncio.run(_exchange(layer, tag)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(LOOPS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == LOOPS
    pools = [pool for found in results for pool in found]
    assert pools and all(isinstance(p, sp.asyncio.SafeConnectionPool) for p in pools)
    assert {p.endpoint for p in pools} == {pools[0].endpoint}
    assert 1 <= peak.close() <= BUDGET


@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
def test_a_sentinel_host_entry_gets_a_safe_sentinel_pool(layer_class):
    from topology import SERVICE, SentinelTopology

    from redis_safepool.asyncio_sentinel import SafeSentinelConnectionPool

    with SentinelTopology() as topo:
        layer = layer_class(hosts=[{"master_name": SERVICE, "sentinels": topo.sentinel_addresses,
                                    "max_connections": BUDGET, "timeout": 10}])

        async def main():
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "direct", "n": 1})
            assert (await asyncio.wait_for(layer.receive(channel), 10))["n"] == 1
            pools = _pools(layer)
            assert pools and all(isinstance(p, SafeSentinelConnectionPool) for p in pools)
            assert {p.master_address for p in pools} == {("127.0.0.1", topo.master.port)}
            await layer.flush()

        asyncio.run(main())
