"""The object holder: ObjectRefs for actors that restart, fetched by name instead of passed in.

Passing an ObjectRef to a restartable actor's constructor makes Ray log an error-level warning
(ray#53727). The driver puts the refs in a named ``ObjectHolder`` and hands the actors a handle,
which ``held_ref`` turns back into the ref: a restarted actor fetches it again the same way.

The holder itself does not restart (a restartable actor with refs in its constructor arguments is
what trips that warning): it is placed by Ray's default scheduling, on the driver's node when it
can, so a worker node's loss leaves it alive; the head node's loss ends the run anyway (resume).
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
