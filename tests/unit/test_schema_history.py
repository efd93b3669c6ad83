"""The shared steps of schema history are frozen: a migration that ran somewhere must not change."""

from __future__ import annotations

import hashlib
import inspect

from shared import schema_history

# A function's source, as the migrations that call it first ran it. A change to a shared
# table is a new function and a new migration in each service holding it, never an edit
# here; a new function is pinned by adding its line.
PINNED = {
    "_json": "15d80f8c20dc835f",
    "_moment": "8d329a9970c66ca8",
    "application_columns_0001": "6416a0ced1752a8c",
    "create_application_indexes_0001": "b75f0d69c4d9c940",
    "create_checkpoints_0001": "a632659fe8be8c59",
    "create_ledger_0001": "ad0880540199f4fa",
    "create_log_0001": "d13d566144b80ce5",
    "create_payout_attempts_0001": "6d00749cb43483d5",
    "create_pools_0001": "4faf0c9ec73cacc8",
    "create_programme_0001": "19bd99a9a81e3e31",
    "create_support_grants_0001": "01299f8add76e3f9",
    "create_unique_among_0001": "df41361a130221d4",
    "document_type_0001": "30f544493fabd591",
    "drop_application_indexes_0001": "940a6c9c11a29f82",
    "drop_checkpoints_0001": "9fa1bd2174409207",
    "drop_log_0001": "b7e197a095a0f500",
    "drop_programme_0001": "226a6e18df584744",
    "drop_support_grants_0001": "c943ad3c645d8230",
    "moment_0001": "37217fc76ef67b04",
}


def _sources() -> dict[str, str]:
    return {
        name: hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
        for name, function in vars(schema_history).items()
        if inspect.isfunction(function) and function.__module__ == schema_history.__name__
    }


def test_no_step_of_schema_history_was_edited_after_it_ran() -> None:
    sources = _sources()
    edited = sorted(name for name, digest in PINNED.items() if sources.get(name) != digest)
    assert not edited, f"frozen steps edited or removed (write a new step instead): {edited}"


def test_every_step_is_pinned() -> None:
    assert sorted(set(_sources()) - set(PINNED)) == []
