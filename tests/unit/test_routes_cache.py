"""The door's cached routes: the partition Kafka's default partitioner picks, per district."""

from __future__ import annotations

from typing import Any, cast

from aiokafka.partitioner import DefaultPartitioner

from service.webhooks.ingest import Ingestor

DISTRICTS = [f"{n:024x}" for n in range(200)]


def _ingestor() -> Ingestor:
    # Routing touches neither the pool nor Kafka.
    return Ingestor(cast(Any, None), cast(Any, None), timeout=1.0)


def _expected(district: str, count: int) -> int:
    partitions = list(range(count))
    return int(DefaultPartitioner()(district.encode(), partitions, partitions))


def test_routes_match_the_default_partitioner_and_follow_a_new_partition_count() -> None:
    ingestor = _ingestor()
    routes = ingestor._routes_of(set(range(12)))
    for district in DISTRICTS:
        assert (routes.get(district) or ingestor._route(district)) == (
            _expected(district, 12),
            district.encode(),
        )
    assert ingestor._routes_of(set(range(12))) is routes  # same count: the cache is kept

    grown = ingestor._routes_of(set(range(24)))
    assert grown == {}  # a new partition count drops every cached route
    moved = [d for d in DISTRICTS if ingestor._route(d)[0] != routes[d][0]]
    assert moved  # with 24 partitions some districts land elsewhere
    for district in DISTRICTS:
        assert grown[district] == (_expected(district, 24), district.encode())
