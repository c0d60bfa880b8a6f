"""The edge around the pure fold: one processor, its ports, its effects.

    ports.py        narrow table / emitter / store / clock interfaces (Faust, or fakes)
    state.py        a plan's state as views over the tables
    processor.py    a record in: validate, fold, run the commands; the catch-up gate
    effects.py      one handler per command kind (exhaustive)
    dispatching.py  cache lookups, the dispatch loop, work items, leases
    failures.py     retry or dead-letter decisions, dead letters, redrives
    timers.py       retry timers
    persist.py      our own failures are retried, never blamed on the record
    fake.py         in-memory ports for crash-at-every-step tests
"""
