"""The object holder: ObjectRefs for actors that restart, fetched by name instead of passed in.

Passing an ObjectRef to a restartable actor's constructor makes Ray log an error-level warning
(ray#53727). The driver puts the refs in a named ``ObjectHolder`` and hands the actors a handle,
which ``held_ref`` turns back into the ref: a restarted actor fetches it again the same way.

The holder itself does not restart (a restartable actor with refs in its constructor arguments is
what trips that warning): it is pinned to the driver's node (a zero-CPU actor under Ray's default
scheduling may land on any node), so a worker node's loss leaves it alive; the loss of the driver's
node ends the run anyway (resume from the checkpoint).
"""
from __future__ import annotations

import ray


@ray.remote(max_restarts=0)
class ObjectHolder:
    """Holds ObjectRefs for actors that restart (see the module docstring)."""

    def __init__(self, refs: list):
        self.held = refs

    def refs(self) -> list:
        return self.held


def held_ref(handle):
    """The ObjectRef behind `handle`: [ref], or (holder name, namespace, index) of an ObjectHolder."""
    if isinstance(handle, (list, tuple)) and len(handle) == 1:
        return handle[0]
    name, namespace, index = handle
    return ray.get(ray.get_actor(name, namespace=namespace).refs.remote())[index]
