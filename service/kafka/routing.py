"""Which partition a key's records go to, as Kafka's default partitioner (murmur2) picks it,
cached per key: the producer would hash every record's key again, and a page repeats the same few
districts."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

PARTITIONER = DefaultPartitioner()
# Keys whose route is cached. Past it the cache starts again: ids seen once (or made up by a
# sender holding a secret) must not grow it for ever; real deployments serve far fewer districts.
MAX_ROUTES = 10_000

Route = tuple[int, bytes]  # (partition, key)


class PartitionRoutes:
    """The cached routes of one topic's keys, bounded (`MAX_ROUTES`)."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}  # key -> (partition, key bytes)
        self._sorted_partitions: list[int] = []  # the partitions the routes were computed for

    def __len__(self) -> int:
        return len(self._routes)

    def of(self, partitions: set[int]) -> dict[str, Route]:
        """The cached routes, emptied when the topic's partition count has changed."""
        if len(partitions) != len(self._sorted_partitions):
            self._routes = {}
            self._sorted_partitions = sorted(partitions)
        return self._routes

    def route(self, key_text: str) -> Route:
        """The key's bytes and the partition Kafka's default partitioner picks for it, for the
        partitions last given to `of`; cached."""
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        key = key_text.encode()
        partitions = self._sorted_partitions
        route = self._routes[key_text] = (PARTITIONER(key, partitions, partitions), key)
        return route
