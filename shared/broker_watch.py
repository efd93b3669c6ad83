"""Noticing that the broker lost its log, and repairing it without a person.

The embedded broker keeps nothing: restarted, it is a new, empty cluster with a new
cluster id (see :mod:`shared.broker`); a production cluster keeps its id for life, so
another id there also means another cluster, whose topics hold none of this log. Every
service process asks the broker for its cluster id every few seconds. When it changes:

- the service's whole log is queued for publishing again, and the relay epoch moves on in
  the same transaction (:meth:`EventStore.note_broker`), so a mark of what was sent to the
  lost broker cannot stand; the database row makes this happen once, whichever replica
  notices first, and also when the service was down while the broker was lost;
- the topics are made again (an empty broker has none);
- every consumer of this process is made again and reads its topics again from the
  beginning. Their committed offsets went with the broker, a position (or an offset
  committed to the new broker) from before the loss may point into what is being
  published again, and a topic the broker made on its own may have another partition
  count; the inbox passes over what was applied before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from shared.eventstore import EventStore

log = logging.getLogger(__name__)


class BrokerWatch:
    """Watches the broker's cluster id for one service process (``run`` as a task)."""

    def __init__(
        self,
        store: EventStore,
        bootstrap_servers: str,
        *,
        owns_log: bool,
        make_topics: Callable[[], Awaitable[None]],
        consumers: Callable[[], list[Any]],
        restart_consumers: Callable[[], Awaitable[None]],
        wake_relay: Callable[[], None],
        interval: float = 2.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``owns_log``: the service publishes a log of its own (oversight does not);
        ``consumers``: the process's Kafka consumers (``aiokafka.AIOKafkaConsumer``);
        ``restart_consumers``: makes them again (they then learn the new broker's topics
        afresh: one the broker made itself may have another partition count);
        ``client_options``: the connection's security (see ``shared.security``)."""
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.owns_log = owns_log
        self.make_topics = make_topics
        self.consumers = consumers
        self.restart_consumers = restart_consumers
        self.wake_relay = wake_relay
        self.interval = interval
        self.client_options = dict(client_options or {})
        self._to_rewind: list[Any] = []
        """Consumers still to send back to the beginning: one that is between assignments
        (rejoining its group on the new broker) is sent back once it holds partitions, or a
        position or offset committed before the loss could skip what is published again."""
        self.cluster_id: str | None = None
        """The cluster this process last saw (None until it first reaches one)."""
        self.losses_seen = 0
        self.requeued_total = 0
        self.rewound_total = 0

    async def run(self) -> None:
        admin: AIOKafkaAdminClient | None = None
        try:
            while True:
                cluster_id: str | None = None
                try:
                    if admin is None:
                        admin = AIOKafkaAdminClient(
                            bootstrap_servers=self.bootstrap_servers,
                            request_timeout_ms=5000,
                            **self.client_options,
                        )
                        await admin.start()
                    cluster: dict[str, Any] = await admin.describe_cluster()
                    cluster_id = str(cluster["cluster_id"])
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # the broker is away: ask again later
                    log.debug("broker watch: no answer from %s: %r", self.bootstrap_servers, error)
                    if admin is not None:
                        with contextlib.suppress(Exception):
                            await admin.close()
                        admin = None
                if cluster_id is not None:
                    try:
                        await self.observe(cluster_id)
                        await self._rewind()
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:  # repaired at the next look
                        log.warning("broker watch: repair after a broker loss failed: %r", error)
                await asyncio.sleep(0.1 if self._to_rewind else self.interval)
        finally:
            if admin is not None:
                with contextlib.suppress(Exception):
                    await admin.close()

    async def observe(self, cluster_id: str) -> bool:
        """The broker answering now is ``cluster_id``: repair if it lost the log. Returns
        whether this process found a loss. Raises if the repair did not finish: the next
        call tries it again (this process still holds the cluster it saw before)."""
        before = self.cluster_id
        requeued = None
        if self.owns_log:  # read first: a write transaction only when something changed
            _, recorded = await self.store.broker_state()
            if recorded != cluster_id:
                requeued = await self.store.note_broker(cluster_id)
        lost_here = before is not None and before != cluster_id
        if requeued is None and not lost_here:
            self.cluster_id = cluster_id
            return False
        if requeued is not None:
            self.requeued_total += requeued
            self.wake_relay()
        await self.make_topics()
        if lost_here:
            await self.restart_consumers()
            self._to_rewind = list(self.consumers())
        self.cluster_id = cluster_id
        self.losses_seen += 1
        log.warning(
            "the broker lost its log (cluster %s, now %s): %s; %s",
            before or "recorded before",
            cluster_id,
            f"{requeued} events queued to publish again"
            if requeued is not None
            else "the log was queued again already (by the relay or another replica)",
            "this process's consumers read their topics again from the beginning"
            if lost_here
            else "consumers start on the new broker",
        )
        return True

    async def _rewind(self) -> None:
        for consumer in list(self._to_rewind):
            if consumer.assignment():
                await consumer.seek_to_beginning()
                self._to_rewind.remove(consumer)
                self.rewound_total += 1


__all__ = ["BrokerWatch"]
