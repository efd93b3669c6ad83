"""The application use case every programme service runs: lock, load, decide, append, project.

HTTP routes and Kafka consumer stages both end up here; neither holds a rule of its
own. A programme service gives its :class:`~shared.domain.Decider` and its
:class:`~shared.kit.projection.ApplicationProjection`; the kit does the rest, for one
command or a batch of them sharing a transaction, and answers HTTP requests that
arrive together in one group commit (:mod:`shared.batching`).
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from shared.batching import GroupCommit
from shared.clock import Clock
from shared.consumer import BatchHandler, Handler
from shared.contracts import Actor, Envelope
from shared.domain import Decider, DomainError, NotFound, ProcessedState
from shared.eventstore import (
    ConcurrencyConflict,
    EventContext,
    EventStore,
    StreamVersion,
    UnitOfWork,
    is_unique_violation,
)
from shared.idempotency import StoredResponse, remember_many, replay_many
from shared.kit.projection import ApplicationProjection

S = TypeVar("S", bound=ProcessedState)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Step:
    """One command for :meth:`ApplicationService.execute_many`."""

    application_id: str
    command: Any
    """A command, or an async function of the application's state returning one (or None)."""
    context: EventContext


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A command from an HTTP request, with what its answer depends on."""

    principal: str
    """Who asked (the token's subject): Idempotency-Keys are theirs."""
    key: str | None
    fingerprint: str
    """The request's method, path and body, hashed: a reused key must match it."""
    step: Step
    status_code: int = 200


@dataclass(frozen=True, slots=True)
class Outcome(Generic[S]):
    """An application after a command, and the events the command appended."""

    application: S
    events: list[Envelope]


@dataclass(frozen=True, slots=True)
class Stages:
    """What a programme does on its own when its events arrive, by event type."""

    batches: Mapping[str, BatchHandler] = field(default_factory=dict)
    """Handlers taking consecutive events of their type together."""
    singles: Mapping[str, Handler] = field(default_factory=dict)


AfterOutcomes = Callable[[UnitOfWork, Sequence[Outcome[Any]]], Awaitable[None]]
"""Work that must share the commands' transaction (a budget hold); raising undoes them all."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def caused_by(event: Envelope, actor: Actor) -> EventContext:
    """The context of what a stage does in reaction to ``event``."""
    return EventContext(
        actor=actor,
        correlation_id=event.correlation_id,
        causation_id=event.event_id,
        firm_id=event.firm_id,
    )


class ApplicationService(Generic[S]):
    """The use cases common to every programme: a programme service subclasses it and
    adds its own commands, policies and queries."""

    RECENT_STATES = 20_000
    """Folded states kept for the next command on the same application."""

    def __init__(
        self,
        store: EventStore,
        decider: Decider[S],
        projection: ApplicationProjection[S],
        clock: Clock,
    ) -> None:
        self.store = store
        self.decider = decider
        self.projection = projection
        self.clock = clock
        self._recent: dict[str, S] = {}
        self.submissions = self.group_commit("submissions", fresh=True)
        self.decisions = self.group_commit("decisions", after=self.after_decisions)

    def stages(self) -> Stages:
        """The programme's consumer stages (verification, issue, payout...)."""
        return Stages()

    async def after_decisions(self, uow: UnitOfWork, outcomes: Sequence[Outcome[Any]]) -> None:
        """What officers' decisions need besides their events (a programme may hold a budget)."""

    # --- the shared path of every command ---------------------------------------------

    async def execute(
        self,
        uow: UnitOfWork,
        application_id: str,
        command: Any,
        context: EventContext,
        *,
        fresh: bool = False,
    ) -> Outcome[S]:
        """Decide ``command`` against the application's log and record the outcome in ``uow``.

        ``command`` is a command, or an async function of the application's current state
        (read once, under the row lock) that returns one, or ``None`` for nothing to do.
        ``fresh``: the id was minted for this command, so there is no history to read (a
        clash would still be caught by the store's version check).
        """
        [outcome] = await self.execute_many(
            uow, [Step(application_id, command, context)], fresh=fresh
        )
        return outcome

    async def submit(
        self, uow: UnitOfWork, application_id: str, command: Any, context: EventContext
    ) -> Outcome[S]:
        """Open a new application ``application_id`` with ``command`` (from a request or a stage)."""
        return await self.execute(uow, application_id, command, context, fresh=True)

    async def execute_many(
        self,
        uow: UnitOfWork,
        steps: Sequence[Step],
        *,
        fresh: bool = False,
        after_each: Callable[[S], None] | None = None,
    ) -> list[Outcome[S]]:
        """:meth:`execute` for several commands in one transaction, in their order.

        The applications are locked and read together, the events and rows written
        together: a few round trips for the whole lot instead of a few per command.
        A later step sees what the earlier ones did (also to the same application);
        ``after_each`` hears of every application a step changed.
        """
        outcomes = await self._run_steps(uow, steps, fresh=fresh, after_each=after_each)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return [outcome for outcome in outcomes if isinstance(outcome, Outcome)]

    async def _run_steps(
        self,
        uow: UnitOfWork,
        steps: Sequence[Step],
        *,
        fresh: bool = False,
        after_each: Callable[[S], None] | None = None,
        isolate: bool = False,
    ) -> list[Outcome[S] | DomainError]:
        """The work of :meth:`execute_many`. ``isolate``: a step refused by the rules gets
        its error as its result and changes nothing, and the steps after it go on (its
        events were only sealed, not written: writes come last, for all steps at once)."""
        ids = list(dict.fromkeys(step.application_id for step in steps))
        if fresh:
            states: dict[str, S | None] = dict.fromkeys(ids)
            versions = {i: StreamVersion() for i in ids}
        else:
            # commands on one application queue here instead of failing on the version check
            states, versions = await self._load(uow, ids)
        initial = dict(versions)
        outcomes: list[Outcome[S] | DomainError] = []
        sealed: list[Envelope] = []
        for step in steps:
            state = states[step.application_id]
            try:
                if state is None and not fresh:
                    raise NotFound(f"there is no application {step.application_id}")
                command = step.command
                if callable(command):
                    assert state is not None
                    command = await command(state)
                    if command is None:
                        outcomes.append(Outcome(state, []))
                        continue
                new_events = self.decider.decide(command, state)
            except DomainError as error:
                if not isolate:
                    raise
                outcomes.append(error)
                continue
            appended = uow.seal(
                step.application_id,
                versions[step.application_id],
                new_events,
                _with_owner(step.context, state),
            )
            for event in appended:
                state = self.decider.evolve(state, event)
            if state is None:  # nothing was decided for an application that does not exist
                raise NotFound(f"there is no application {step.application_id}")
            if appended:
                states[step.application_id] = state
                versions[step.application_id] = StreamVersion.after(appended)
                sealed.extend(appended)
                if after_each is not None:
                    after_each(state)
            outcomes.append(Outcome(state, appended))
        await uow.insert(sealed)
        changed = [
            state for i, state in states.items() if state is not None and versions[i] != initial[i]
        ]
        await self.projection.save(
            uow, changed, new={a.id for a in changed if not initial[a.id].seq}
        )
        self._recall(changed)
        return outcomes

    async def _load(
        self, uow: UnitOfWork, ids: Sequence[str]
    ) -> tuple[dict[str, S | None], dict[str, StreamVersion]]:
        """Lock the applications and read their states: a state this process folded
        before is taken again if its chain has not moved since (same version and hash,
        read under the lock); the others are folded from their logs, the source of truth."""
        heads = await self.projection.lock(uow, ids)
        states: dict[str, S | None] = {}
        versions: dict[str, StreamVersion] = {}
        unknown = []
        for i in ids:
            head = heads.get(i)
            known = self._recent.get(i)
            if head is None:
                states[i], versions[i] = None, StreamVersion()
            elif known is not None and (known.version, known.last_hash) == (head.seq, head.hash):
                states[i], versions[i] = known, head
            else:
                unknown.append(i)
        for i, history in (await uow.read_streams(unknown)).items():
            states[i], versions[i] = self.decider.fold(history), StreamVersion.after(history)
        self._recall([s for i in unknown if (s := states[i]) is not None])
        return states, versions

    def _recall(self, states: Sequence[S]) -> None:
        """Keep the latest folded states (bounded): the next command on one of them need
        not read and fold its whole log again. Whether a transaction commits does not
        matter: a state is reused only when the locked row shows its version and hash."""
        for state in states:
            self._recent.pop(state.id, None)
            self._recent[state.id] = state
        while len(self._recent) > self.RECENT_STATES:
            self._recent.pop(next(iter(self._recent)))

    async def react(
        self,
        uow: UnitOfWork,
        events: Sequence[Envelope],
        actor: Actor,
        command_for: Callable[[S], Any],
        *,
        only_in: str | None = None,
        after_each: Callable[[S], None] | None = None,
    ) -> list[Outcome[S]]:
        """A stage's work on a batch of its events: ``command_for(state)`` of each event's
        application (a command, an awaitable of one, or None), under ``actor``, caused by
        the event. ``only_in``: applications in another status are passed over (done already)."""

        async def command(state: S) -> Any:
            if only_in is not None and str(state.status) != only_in:
                return None
            decided = command_for(state)
            return await decided if inspect.isawaitable(decided) else decided

        steps = [Step(e.aggregate_id, command, caused_by(e, actor)) for e in events]
        return await self.execute_many(uow, steps, after_each=after_each)

    async def read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``query(connection, *args)`` on a connection of its own: a read for the API."""
        async with self.store.engine.connect() as connection:
            return await query(connection, *args)

    async def in_transaction(
        self, work: Callable[[UnitOfWork], Awaitable[T]], attempts: int = 5
    ) -> T:
        """Run ``work`` in its own transaction, again from scratch if another writer got there first."""
        for attempt in range(attempts):
            try:
                async with self.store.transaction() as uow:
                    return await work(uow)
            except ConcurrencyConflict:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    # --- commands from many HTTP requests at once -------------------------------------

    async def answer(
        self,
        uow: UnitOfWork,
        requests: Sequence[CommandRequest],
        *,
        fresh: bool = False,
        after: AfterOutcomes | None = None,
    ) -> list[StoredResponse | Exception]:
        """Run the requests' commands in ``uow``, in order, each answered as if alone.

        A repeated Idempotency-Key gets its recorded answer; a command the rules refuse
        gets its error and writes nothing. Raises (and the caller must roll back and run
        the requests one by one) if something beyond one request's own rules fails: an
        ``after`` hook (a budget that cannot hold all approvals together), a key or
        version taken meanwhile.
        """
        results: list[StoredResponse | Exception | None] = [None] * len(requests)
        keyed = [(i, r.principal, r.key, r.fingerprint) for i, r in enumerate(requests) if r.key]
        replays = await replay_many(uow, [(p, k, f) for _, p, k, f in keyed])
        for (i, *_), replayed in zip(keyed, replays, strict=True):
            results[i] = replayed
        todo = [i for i, result in enumerate(results) if result is None]
        outcomes = await self._run_steps(
            uow, [requests[i].step for i in todo], fresh=fresh, isolate=True
        )
        if after is not None:
            await after(uow, [o for o in outcomes if isinstance(o, Outcome)])
        remembered: list[tuple[str, str, str, StoredResponse]] = []
        for i, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, Exception):
                results[i] = outcome
                continue
            request = requests[i]
            response = StoredResponse(
                request.status_code, self.projection.resource(outcome.application)
            )
            results[i] = response
            if request.key:
                remembered.append((request.principal, request.key, request.fingerprint, response))
        await remember_many(uow, remembered)
        return [result for result in results if result is not None]

    def group_commit(
        self, name: str, *, fresh: bool = False, after: AfterOutcomes | None = None
    ) -> GroupCommit[CommandRequest, StoredResponse]:
        """Requests that arrive together share a transaction (see :mod:`shared.batching`)."""

        async def together(requests: Sequence[CommandRequest]) -> list[StoredResponse | Exception]:
            async def work(uow: UnitOfWork) -> list[StoredResponse | Exception]:
                return await self.answer(uow, requests, fresh=fresh, after=after)

            return await self.in_transaction(work, attempts=1)

        async def alone(request: CommandRequest) -> StoredResponse:
            async def work(uow: UnitOfWork) -> StoredResponse:
                [result] = await self.answer(uow, [request], fresh=fresh, after=after)
                if isinstance(result, Exception):
                    raise result
                return result

            try:
                return await self.in_transaction(work)
            except Exception as error:
                if not request.key or not is_unique_violation(error):
                    raise
                # the same key raced us and won: answer with what it recorded
                return await self.in_transaction(work)

        return GroupCommit(name, together, alone)


def _with_owner(context: EventContext, state: ProcessedState | None) -> EventContext:
    """Every event of an application carries its owner's firm id, whoever caused it."""
    if state is None or context.firm_id == state.firm_id:
        return context
    return EventContext(
        actor=context.actor,
        correlation_id=context.correlation_id,
        causation_id=context.causation_id,
        firm_id=state.firm_id,
    )


__all__ = [
    "AfterOutcomes",
    "ApplicationService",
    "CommandRequest",
    "Outcome",
    "Stages",
    "Step",
    "caused_by",
    "new_id",
]
