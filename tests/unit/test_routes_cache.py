"""The door's cached routes: the partition Kafka's default partitioner picks, per district."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from service.kafka.routing import PartitionRoutes

DISTRICTS = [f"{n:024x}" for n in range(200)]


def _cache() -> PartitionRoutes:
    # Routing touches neither the pool nor Kafka.
    return PartitionRoutes()


def _expected(district: str, count: int) -> int:
    partitions = list(range(count))
    return int(DefaultPartitioner()(district.encode(), partitions, partitions))


def test_routes_match_the_default_partitioner_and_follow_a_new_partition_count() -> None:
    cache = _cache()
    routes = cache.of(set(range(12)))
    for district in DISTRICTS:
        assert (routes.get(district) or cache.route(district)) == (
            _expected(district, 12),
            district.encode(),
        )
    assert cache.of(set(range(12))) is routes  # same count: the cache is kept

    grown = cache.of(set(range(24)))
    assert grown == {}  # a new partition count drops every cached route
    moved = [d for d in DISTRICTS if cache.route(d)[0] != routes[d][0]]
    assert moved  # with 24 partitions some districts land elsewhere
    for district in DISTRICTS:
        assert grown[district] == (_expected(district, 24), district.encode())
