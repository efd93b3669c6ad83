"""Consumer lag per service and topic, measured with the fetch high watermark.

Oversight reads every programme's topic, so its own consumer learns each partition's
high watermark from its fetch responses (``consumer.highwater``: right on Tansu, where
``end_offsets`` is not). The lag of a consumer group on a topic is the sum, over the
partitions, of that watermark minus the group's committed offset. Groups are found on
the broker; a group belongs to the service its name starts with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger(__name__)

SERVICE_NAMES = ("oversight", "voucher", "taxcredit", "fund")


class LagMeter:
    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        topics: Sequence[str],
        consumer: Callable[[], AIOKafkaConsumer | None],
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``consumer`` gives oversight's own consumer of ``topics`` once it runs;
        ``client_options``: the Kafka connection's security (see ``shared.security``)."""
        self.bootstrap = bootstrap
        self.client_options = dict(client_options or {})
        self.prefix = prefix
        self.topics = frozenset(topics)
        self._consumer = consumer
        self.lag: list[dict[str, Any]] = []
        self._readers: dict[str, AIOKafkaConsumer] = {}

    def highwaters(self) -> dict[TopicPartition, int]:
        consumer = self._consumer()
        if consumer is None:
            return {}
        found = {}
        for partition in consumer.assignment():
            mark = consumer.highwater(partition)
            if mark is not None:
                found[partition] = mark
        return found

    def service_of(self, group: str) -> str | None:
        name = group.removeprefix(self.prefix)
        if self.prefix and name == group:
            return None  # another deployment's group on the same broker
        return next((s for s in SERVICE_NAMES if name.startswith(s + "-") or name == s), None)

    async def measure(self) -> list[dict[str, Any]]:
        """One reading of every known group's lag on the programmes' topics."""
        marks = self.highwaters()
        if not marks:
            return self.lag
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.client_options)
        await admin.start()
        try:
            listed = await admin.list_consumer_groups()
        finally:
            await admin.close()
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for group in sorted(str(g[0] if isinstance(g, tuple) else g) for g in listed):
            service = self.service_of(group)
            if service is None:
                continue
            reader = await self._reader(group)
            for partition, mark in marks.items():
                committed = await reader.committed(partition)
                if committed is None:
                    continue  # the group does not read this topic
                topic = partition.topic.removeprefix(self.prefix)
                totals[(service, topic)] += max(mark - committed, 0)
        self.lag = [
            {"service": service, "topic": topic, "lag": lag}
            for (service, topic), lag in sorted(totals.items())
        ]
        return self.lag

    async def _reader(self, group: str) -> AIOKafkaConsumer:
        """A consumer in ``group`` that joins nothing: it only asks for committed offsets
        (the broker's own answer, as the group's members would get it)."""
        reader = self._readers.get(group)
        if reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=group,
                enable_auto_commit=False,
                **self.client_options,
            )
            await reader.start()
            self._readers[group] = reader
        return reader

    async def run(self, every: float = 5.0) -> None:
        try:
            while True:
                try:
                    await self.measure()
                except Exception as error:  # a probe: report, never stop
                    log.info("oversight could not measure lag: %r", error)
                await asyncio.sleep(every)
        finally:
            for reader in self._readers.values():
                with contextlib.suppress(Exception):
                    await reader.stop()
