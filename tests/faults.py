"""Fault injection for the Ray tests: an evaluator actor dies by SIGKILL in the middle of a candidate;
and a held-aside loss that every projector update provably raises (the guard must act).

Nothing of this is in the production actors. The test that starts the cluster passes
``runtime_env(trigger)`` to ``ray.init``: Ray runs ``install`` (a ``worker_process_setup_hook``)
in every worker process of that job when the process starts, and ``install`` wraps
``CandidateScorer.evaluate`` — the work that ``EvaluatorActor.evaluate`` does — there. While the
trigger file does not exist, nothing changes. Once a test writes it (its content: the least
projector version to fail at, default 0), the first evaluator to finish scoring a candidate at that
version or later deletes it and kills its own process: the candidate was pruned and scored but its
result is never returned, as when a node dies mid-candidate. Exactly one actor dies per trigger.

While the file named by PENALTY_ENV exists, ``CandidateScorer.answer_loss`` (the held-aside loss the
projector guard judges an update by) returns the true loss plus PENALTY x ||W_p - W_p,dense||^2 (the
projector's distance from the one the process started with). A mini-batch step moves every projector
weight (AdamW: about lr each), so the penalty grows by far more than the true loss (a few tenths on the
tiny model) can fall, at every fraction the guard tries: it must halve and then drop every update.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

TRIGGER_ENV = "EFFICIENTLLAVA_TEST_KILL_TRIGGER"
PENALTY_ENV = "EFFICIENTLLAVA_TEST_PENALTY_TRIGGER"
PENALTY = 1e6


def runtime_env(trigger: Path, penalty: Path | None = None) -> dict:
    """The job-level runtime env for ``ray.init(runtime_env=...)`` that arms the faults on `trigger` (kill)
    and `penalty` (the held-aside loss penalty)."""
    import ray.cloudpickle

    # the workers cannot import tests/: Ray ships `install` pickled by value rather than by name
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env = {TRIGGER_ENV: str(trigger)} | ({PENALTY_ENV: str(penalty)} if penalty is not None else {})
    return {"worker_process_setup_hook": install, "env_vars": env}


def install() -> None:
    """worker_process_setup_hook: wrap CandidateScorer.evaluate with the fault check (once per process)."""
    from efficientllava.prune_engine.scoring import CandidateScorer

    evaluate = CandidateScorer.evaluate
    if getattr(evaluate, "fault_injected", False):
        return

    def evaluate_then_maybe_die(self, *args, **kwargs):
        result = evaluate(self, *args, **kwargs)
        maybe_die(os.environ.get(TRIGGER_ENV), self.projector_version)
        return result

    evaluate_then_maybe_die.fault_injected = True
    CandidateScorer.evaluate = evaluate_then_maybe_die

    answer_loss = CandidateScorer.answer_loss

    def answer_loss_maybe_penalised(self, *args, **kwargs):
        loss = answer_loss(self, *args, **kwargs)
        trigger = os.environ.get(PENALTY_ENV)
        if not trigger or not os.path.exists(trigger):
            return loss
        import torch

        now = torch.cat([v.detach().double().flatten() for v in self.projector_state_dict().values()])
        start = getattr(self, "_penalty_origin", None)
        if start is None:  # the projector this process began with (the dense one: the guard runs in generation 0)
            start = self._penalty_origin = now.clone()
        return loss + PENALTY * float(((now - start) ** 2).sum())

    CandidateScorer.answer_loss = answer_loss_maybe_penalised


def maybe_die(trigger: str | None, version: int) -> None:
    """SIGKILL this process if `trigger` exists and `version` is at least the version written in it;
    the first process to delete the file is the one that dies."""
    if not trigger or not os.path.exists(trigger):
        return
    try:
        least = int(Path(trigger).read_text().strip() or 0)
    except (OSError, ValueError):
        least = 0
    if version < least:
        return
    try:
        os.remove(trigger)
    except FileNotFoundError:
        return  # another actor took it
    os.kill(os.getpid(), signal.SIGKILL)
