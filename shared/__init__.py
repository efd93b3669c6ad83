"""The event backbone every cluster-incentives service stands on.

Event contracts and the public hashing rule (``shared.contracts``), the
event store, outbox relay and inbox (``shared.eventstore``, ``shared.relay``,
``shared.consumer``), topics, the embedded broker, auth and problem+json errors;
the contracts every programme shares (``shared.domain``) and the service kit a
programme service is built on (``shared.kit``). Nothing here imports a service.
"""
