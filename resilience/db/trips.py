"""Node trips shared by the fleet: a worker that finds a database node dead tells the others through the
shared cache, so they skip it within about a second instead of each paying a timeout to find out.

One key per node (``dbnode:<alias>:down``, the wall-clock time of the trip), kept :data:`TRIP_SECONDS`. Each
worker reads the keys at most once a second (one ``get_many``, on its next routing decision) and marks a node
down when a trip is newer than its own last successful probe; its own monitor marks the node up again when a
probe succeeds, as after any failure. With Redis down the keys live in each process's memory: trips are per
worker again, as without sharing. Node *health* stays per worker (each probes every node itself).
"""

from __future__ import annotations

from django.core.cache import caches

KEY_PREFIX = "dbnode:"
TRIP_SECONDS = 10  # a trip older than this is not news: every worker's own probe has judged the node since


class SharedNodeTrips:
    def __init__(self, cache_alias: str = "default") -> None:
        self.cache_alias = cache_alias

    @staticmethod
    def _key(alias: str) -> str:
        return f"{KEY_PREFIX}{alias}:down"

    def publish(self, alias: str, at: float) -> None:
        caches[self.cache_alias].set(self._key(alias), at, TRIP_SECONDS)

    def read(self, aliases: list[str]) -> dict[str, float]:
        """The recent trips of these nodes: alias -> wall-clock time."""
        found = caches[self.cache_alias].get_many([self._key(alias) for alias in aliases])
        return {
            alias: float(found[self._key(alias)])
            for alias in aliases
            if isinstance(found.get(self._key(alias)), int | float)
        }

    def clear(self, aliases: list[str]) -> None:
        caches[self.cache_alias].delete_many([self._key(alias) for alias in aliases])
