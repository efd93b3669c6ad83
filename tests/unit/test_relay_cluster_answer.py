"""When the relay may take the broker's last answer about its cluster as still standing."""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any

from shared.relay import _Answered


class Connection:
    def __init__(self) -> None:
        self.open = True

    def connected(self) -> bool:
        return self.open


def producer(*connections: Connection, shown: bool = True) -> Any:
    client = SimpleNamespace(_conns={n: c for n, c in enumerate(connections)})
    return SimpleNamespace(client=client if shown else SimpleNamespace())


def test_the_answer_stands_while_every_connection_is_one_it_came_over() -> None:
    first, second = Connection(), Connection()
    answered = _Answered("cluster-a", weakref.WeakSet([first, second]))
    assert answered.still(producer(first, second), "cluster-a")
    assert not answered.still(producer(first, second), "cluster-b")  # the log names another


def test_a_connection_closed_or_made_since_means_asking_again() -> None:
    first = Connection()
    answered = _Answered("cluster-a", weakref.WeakSet([first]))
    assert not answered.still(producer(first, Connection()), "cluster-a")
    first.open = False
    assert not answered.still(producer(first), "cluster-a")


def test_without_connections_to_look_at_the_broker_is_always_asked() -> None:
    first = Connection()
    answered = _Answered("cluster-a", weakref.WeakSet([first]))
    assert not answered.still(producer(first, shown=False), "cluster-a")
    assert not answered.still(producer(), "cluster-a")
