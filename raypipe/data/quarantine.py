"""Counted quarantine of bad tiles across Ray workers.

With ``on_bad_tile: skip`` a bad tile is not used, and not lost silently either: every worker
reports it to one named :class:`QuarantineLedger` actor per pipeline, which de-duplicates by sample
(a tile seen again in the next epoch is counted once), so the job can state
``samples in = samples used + samples quarantined``.
"""

from __future__ import annotations

import json
import uuid

import ray

from raypipe import storage

NAMESPACE = "raypipe"


@ray.remote(num_cpus=0)
class QuarantineLedger:
    def __init__(self):
        self._items: dict[str, dict] = {}

    def add(self, records: list[dict]) -> int:
        for r in records:
            self._items.setdefault(r["sample_id"], r)
        return len(self._items)

    def items(self) -> list[dict]:
        return sorted(self._items.values(), key=lambda r: r["sample_id"])

    def count(self) -> int:
        return len(self._items)


def create_ledger(name: str | None = None):
    """Start a ledger actor; returns (name, handle). Keep the handle: the actor lives as long as it does.
    Map functions get the name and look the actor up."""
    name = name or f"quarantine-{uuid.uuid4().hex[:12]}"
    handle = QuarantineLedger.options(name=name, namespace=NAMESPACE, get_if_exists=True,
                                      scheduling_strategy=on_driver_node()).remote()
    return name, handle


def on_driver_node():
    """Scheduling for the driver's bookkeeping actors (the ledger, the progress queue, 0 CPUs each):
    on the driver's own node, so that losing a worker node never loses the accounts. Hard affinity:
    a soft one let Ray place them on another node when the driver's (a 0-CPU head) was slow to start
    a worker, and the accounts were then lost with that node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def report(name: str, records: list[dict]) -> None:
    if records:
        ray.get(ray.get_actor(name, namespace=NAMESPACE).add.remote(records))


def collect(name: str) -> list[dict]:
    return ray.get(ray.get_actor(name, namespace=NAMESPACE).items.remote())


def write(items: list[dict], uri: str) -> None:
    storage.write_bytes(uri, json.dumps(items, indent=1).encode())
