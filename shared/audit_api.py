"""What every service publishes for auditors: its events in position order, its signing keys,
its signed checkpoints and Merkle proofs (see :mod:`shared.checkpoints`).

Keys, checkpoints and proofs need no token: they reveal hashes only. The events
themselves are for the auditor and ministry roles.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request

from shared.auth import Principal, require_role
from shared.checkpoints import Checkpointer, checkpoints, document_of
from shared.contracts import Role
from shared.contracts.envelope import format_timestamp
from shared.domain import NotFound, Unprocessable

Auditors = Annotated[Principal, Depends(require_role(Role.AUDITOR, Role.MINISTRY))]


def _checkpointer(request: Request) -> Checkpointer:
    found: Checkpointer = request.app.state.runtime.extras["checkpointer"]
    return found


def _out_of_range(detail: str, field: str) -> Unprocessable:
    return Unprocessable(detail, field=field)


def audit_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audit"])

    @router.get("/events", summary="The service's events in position order")
    async def list_events(
        request: Request,
        principal: Auditors,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        """Every event after position ``after`` (exclusive; positions start at 1), oldest first:
        the leaves of the checkpoints, rebuilt by anyone who reads them."""
        found = await request.app.state.runtime.store.read_all(after=after, limit=limit)
        return {"items": [{"position": e.position, "envelope": e.envelope} for e in found]}

    @router.get("/keys", summary="The keys checkpoints are signed with")
    async def keys(request: Request) -> dict[str, Any]:
        """The current key, then those it replaced (a checkpoint names its key by id)."""
        retired = request.app.state.runtime.settings.checkpoint_retired_keys
        return {
            "keys": [
                _checkpointer(request).key.published(),
                *(
                    {
                        "key_id": k.key_id,
                        "algorithm": "Ed25519",
                        "public_key": k.public_key,
                        "valid_from": format_timestamp(k.valid_from),
                    }
                    for k in retired
                ),
            ]
        }

    @router.get("/checkpoints", summary="Signed checkpoints, oldest first")
    async def list_checkpoints(
        request: Request,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Checkpoints of a tree size above ``after``."""
        sealer = _checkpointer(request)
        async with sealer.store.engine.connect() as connection:
            rows = await connection.execute(
                sa.select(checkpoints)
                .where(checkpoints.c.tree_size > after)
                .order_by(checkpoints.c.tree_size)
                .limit(limit)
            )
            return {"items": [document_of(r, sealer.service) for r in rows]}

    @router.get(
        "/checkpoints/latest",
        summary="The latest signed checkpoint",
        responses={404: {"description": "Nothing is sealed yet"}},
    )
    async def latest_checkpoint(request: Request) -> dict[str, Any]:
        sealer = _checkpointer(request)
        async with sealer.store.engine.connect() as connection:
            row = await sealer.latest(connection)
        if row is None:
            raise NotFound("nothing is sealed yet")
        return document_of(row, sealer.service)

    @router.get("/checkpoints/{tree_size}", summary="The checkpoint of one tree size")
    async def get_checkpoint(
        request: Request, tree_size: Annotated[int, Path(ge=1, le=2**63 - 1)]
    ) -> dict[str, Any]:
        sealer = _checkpointer(request)
        async with sealer.store.engine.connect() as connection:
            row = (
                await connection.execute(
                    sa.select(checkpoints).where(checkpoints.c.tree_size == tree_size)
                )
            ).first()
        if row is None:
            raise NotFound(f"there is no checkpoint of tree size {tree_size}")
        return document_of(row, sealer.service)

    async def sealed_size(sealer: Checkpointer) -> int:
        """The latest checkpoint's tree size, the tree read up to its last position."""
        async with sealer.store.engine.connect() as connection:
            row = await sealer.latest(connection)
        if row is None:
            return 0
        await sealer.log.catch_up(int(row.last_position))
        return int(row.tree_size)

    @router.get("/proofs/inclusion", summary="An inclusion proof (RFC 9162 §2.1.3)")
    async def inclusion_proof(
        request: Request,
        index: Annotated[int, Query(ge=0, le=2**63 - 1)],
        tree_size: Annotated[int, Query(ge=1, le=2**63 - 1)],
    ) -> dict[str, Any]:
        """The audit path of leaf ``index`` in the tree of ``tree_size`` leaves, any size up
        to the latest checkpoint's."""
        sealer = _checkpointer(request)
        sealed = await sealed_size(sealer)
        if tree_size > sealed:
            raise _out_of_range(
                f"tree_size {tree_size} is beyond the latest checkpoint ({sealed})", "tree_size"
            )
        if index >= tree_size:
            raise _out_of_range(f"index {index} is not below tree_size {tree_size}", "index")
        tree = sealer.log.tree
        return {
            "index": index,
            "tree_size": tree_size,
            "leaf_hash": tree.leaf(index).hex(),
            "proof": [node.hex() for node in tree.inclusion_proof(index, tree_size)],
        }

    @router.get("/proofs/consistency", summary="A consistency proof (RFC 9162 §2.1.4)")
    async def consistency_proof(
        request: Request,
        first: Annotated[int, Query(ge=1, le=2**63 - 1)],
        second: Annotated[int, Query(ge=1, le=2**63 - 1)],
    ) -> dict[str, Any]:
        """That the tree of ``second`` leaves extends the tree of ``first``, any sizes up to
        the latest checkpoint's."""
        sealer = _checkpointer(request)
        sealed = await sealed_size(sealer)
        if second > sealed:
            raise _out_of_range(
                f"second {second} is beyond the latest checkpoint ({sealed})", "second"
            )
        if first > second:
            raise _out_of_range(f"first {first} is above second {second}", "first")
        proof = sealer.log.tree.consistency_proof(first, second)
        return {"first": first, "second": second, "proof": [node.hex() for node in proof]}

    return router


__all__ = ["audit_router"]
