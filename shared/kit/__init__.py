"""The service kit: what every programme service repeats, written once.

A programme service is its domain (decider, rules, tables), its request schemas and
its composition root; the kit gives it the application use case and its batch path
(:mod:`.application`), group-committed idempotent HTTP endpoints with four eyes,
withdrawal, events and cursors (:mod:`.http`), the projection table (:mod:`.projection`),
budget and capacity holds (:mod:`.holds`), consumer stages (:mod:`.stages`),
catalogue loading (:mod:`.catalogue`) and the app itself (:mod:`.app`).
"""
