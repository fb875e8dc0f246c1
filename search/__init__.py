"""EfficientLLaVA search core (docs/method.md §2-§5): policy space, SRM fitness, genetic
operators, neighbour weights, the Algorithm-1 driver and its checkpoints.
Pure Python: it drives any evaluator object and never holds a model."""
from .checkpoint import CheckpointError, RunStore, read_config, read_history
from .config import ConfigError, SearchConfig
from .driver import SearchDriver, SearchResult
from .rundir import RunDir
from .protocol import Evaluation, EvaluationProtocol, ProjectorUpdate
from .events import (CandidateEvaluated, GenerationFinished, GenerationStarted, OffspringSized, ProjectorStepped,
                     Reranked, SearchFinished)
from .fitness import FitnessError, fitness, norm_term, proxy_loss, srm_scale
from .neighbours import effective_candidates, neighbour_weights
from .policy import PolicySpace, feasible_space

__all__ = [
    "CandidateEvaluated", "CheckpointError", "ConfigError", "Evaluation", "EvaluationProtocol", "FitnessError",
    "GenerationFinished",
    "GenerationStarted", "PolicySpace", "ProjectorStepped", "ProjectorUpdate", "RunDir", "RunStore", "SearchConfig",
    "OffspringSized", "Reranked", "SearchDriver", "SearchFinished", "SearchResult", "effective_candidates", "feasible_space", "fitness",
    "neighbour_weights", "norm_term", "proxy_loss", "read_config", "read_history", "srm_scale",
]
