"""The Ray layer of EfficientLLaVA (docs/method.md §5): evaluator actors, the projector learner and the
driver-side `EvaluatorPool` that plugs them into the search core (search/). Thin on purpose: the
pruning lives in prune_engine/, the search in search/.

    from efficientllava.actors import RunConfig, run_search, resume_search
"""
from efficientllava.actors.config import RayOptions, RunConfig

__all__ = ["RayOptions", "RunConfig", "run_search", "resume_search"]


def __getattr__(name):  # Ray and torch are imported only when a run needs them
    if name in ("run_search", "resume_search"):
        from efficientllava.actors import run

        return getattr(run, name)
    raise AttributeError(name)
