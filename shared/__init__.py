"""The event backbone every cluster-incentives service stands on.

Event contracts and the public hashing rule (``shared.contracts``), the
event store, outbox relay and inbox (``shared.eventstore``, ``shared.relay``,
``shared.consumer``), topics, the embedded broker, auth and problem+json errors.
Nothing here imports a service.
"""
