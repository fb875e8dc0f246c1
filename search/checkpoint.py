"""Run-directory storage (docs/method.md, "Checkpoints"): a local path or any URI ``pyarrow.fs`` opens.

Layout after generation t (t = completed generations):
    config.yaml                    the search config, written when the run starts
    app.yaml                       the settings of the program that runs the search (its app slot; efficientllava:
                                   engine, data and ray), written when the run starts; never read by search/
    history-<t>.parquet            one row per evaluated candidate, all generations so far
    projector-<t>.bin              projector + optimizer state (when there is a projector)
    state.json                     population, RNG state, projector version, config, app slot,
                                   model identity, and the name + sha256 of the two files
    committed.txt                  the last committed generation (written after state.json)
Every file is written to a temporary name and then moved into place; ``state.json``
is moved last and is the commit point, so a crash at any moment leaves the previous
checkpoint intact. After the commit, only files of *older* generations than the one just
committed are deleted; nothing is ever deleted without a readable ``state.json`` that
references newer files. Checkpoint files without a valid ``state.json`` (deleted or corrupt)
are an error that leaves every file in place (see :meth:`RunStore.orphans`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .config import ConfigError
from .rundir import RunDir

FORMAT = 5  # 2: per-modality losses, fidelity, SRM scale and projector-step records in the history; 3: projector_scale;
# 4: infeasible (why a candidate with non-finite scores got fitness -inf); 5: the app slot ("app": the settings of
# the program that runs the search, which format 4 kept inside the search config's `extra`)
READABLE = (4, 5)  # format 4 reads as 5 without an app slot ("app" absent: the program finds its settings in `extra`)
STATE = "state.json"
CONFIG = "config.yaml"
APP = "app.yaml"
COMMITTED = "committed.txt"  # written after every commit of state.json: "a checkpoint existed here"

HISTORY_SCHEMA = pa.schema(
    [
        ("generation", pa.int32()),
        ("candidate", pa.int32()),
        ("policy", pa.list_(pa.int16())),
        ("mean_sparsity", pa.float64()),
        ("projector_version", pa.int64()),
        # "full" (the generation's population), "screen" (a screened child), "stage" (a survivor of the
        # screening scored on the stage slice; same candidate number as its screen row) or "scale" (a random
        # policy scored once to measure sd(L)/sd(G); candidate < 0)
        ("fidelity", pa.string()),
        ("l_proxy", pa.float64()),  # L = (1 - w) L_text + w L_mm
        ("l_text", pa.float64()),
        ("l_mm", pa.float64()),  # null without image-text proxy data
        ("g", pa.float64()),  # G = sum_k log(||W_hat_k|| / ||W_k||)
        ("srm_scale", pa.float64()),  # s in F = -L - eta * s * G (fixed per run)
        ("fitness", pa.float64()),  # -inf for an infeasible candidate
        ("infeasible", pa.string()),  # null, or why the candidate is infeasible ("l_mm is nan": a non-finite score)
        ("c_m", pa.float64()),  # neighbour weight (null for screened children)
        ("seconds", pa.float64()),
        ("cached", pa.bool_()),
        ("log_norm_ratio", pa.list_(pa.float64())),
        # per generation (the same on every row of a generation): search-space evolution
        ("effective_candidates", pa.float64()),  # 1 / sum c_m^2
        ("projector_loss_before", pa.float64()),  # sum c_m L_m before the projector update
        ("projector_loss_after", pa.float64()),  # ... and after it
        ("projector_change", pa.float64()),  # ||delta W_p|| / ||W_p||
        ("projector_scale", pa.float64()),  # fraction of the update kept by the guard (0: dropped; null: no projector)
    ]
)


_GENERATION_FILE = re.compile(r"^(history|projector)-(\d+)\.(parquet|bin)$")


class CheckpointError(RuntimeError):
    """A missing, corrupt or incompatible checkpoint (always a one-line message)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def normalise(obj: Any) -> Any:
    """JSON round trip, so identities compare the way they are stored."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class RunStore(RunDir):
    """The checkpoint files of a run directory (the directory itself: search/rundir.py)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        try:
            super().__init__(run_dir)
        except Exception as e:
            raise CheckpointError(f"cannot open run directory {run_dir}: {str(e).splitlines()[0]}") from None

    def exists(self) -> bool:
        return self.is_file(STATE)

    def generation_files(self) -> list[str]:
        """Names of the per-generation files (history-*.parquet, projector-*.bin) present."""
        return [name for name in self.names() if _GENERATION_FILE.match(name)]

    def check_not_orphaned(self) -> None:
        """Refuse a run directory whose checkpoint files lost their commit record (state.json)."""
        files = self.generation_files()
        if not files or self.exists():
            return
        later = any(int(_GENERATION_FILE.match(f).group(2)) > 1 for f in files)
        if self.is_file(COMMITTED) or later:  # else: a crash before the very first commit (nothing lost)
            raise CheckpointError(
                f"{self.uri}: {STATE} is missing but checkpoint files are present ({', '.join(files[-2:])}); "
                f"nothing was changed: restore {STATE} from a backup, or start a new run with another --out")

    # ---- writing ----------------------------------------------------------------
    def write_config(self, config: dict[str, Any], app: dict[str, Any] | None = None) -> None:
        """When a run starts: the search config (config.yaml) and, when given, the app slot (app.yaml, first)."""
        if app is not None:
            self.write(APP, yaml.safe_dump(app, sort_keys=False).encode())
        self.write(CONFIG, yaml.safe_dump(config, sort_keys=False).encode())

    def save(self, state: dict[str, Any], history: pa.Table, projector: bytes | None) -> None:
        t = int(state["generation"])
        sink = pa.BufferOutputStream()
        pq.write_table(history.cast(HISTORY_SCHEMA), sink)
        hist = sink.getvalue().to_pybytes()
        body = dict(state, format=FORMAT)
        body["history"] = {"file": f"history-{t:06d}.parquet", "sha256": _sha256(hist), "rows": history.num_rows}
        self.write(body["history"]["file"], hist)
        body["projector"] = None
        if projector is not None:
            body["projector"] = {"file": f"projector-{t:06d}.bin", "sha256": _sha256(projector)}
            self.write(body["projector"]["file"], projector)
        body["checksum"] = _sha256(_canonical(body).encode())
        self.write(STATE, json.dumps(body, sort_keys=True, indent=1).encode())
        self.write(COMMITTED, f"{t}\n".encode())
        self._cleanup(t)

    def _cleanup(self, committed: int) -> None:
        """Delete the files of generations older than the one just committed, and temporaries."""
        for name in self.names():
            match = _GENERATION_FILE.match(name)
            stale = match is not None and int(match.group(2)) < committed
            if stale or ".tmp-" in name:
                try:
                    self.delete(name)
                except OSError:
                    pass

    # ---- reading ----------------------------------------------------------------
    def load(self) -> tuple[dict[str, Any], pa.Table, bytes | None]:
        """The last committed checkpoint: (state, history, projector state bytes)."""
        where = f"checkpoint in {self.uri}"
        if not self.exists():
            raise CheckpointError(f"no checkpoint in {self.uri} ({STATE} not found)")
        try:
            body = json.loads(self.read(STATE))
            checksum = body.pop("checksum")
        except Exception:
            raise CheckpointError(f"corrupt {where}: {STATE} is not a valid checkpoint record") from None
        if checksum != _sha256(_canonical(body).encode()):
            raise CheckpointError(f"corrupt {where}: {STATE} checksum mismatch")
        if body.get("format") not in READABLE:
            raise CheckpointError(f"unsupported {where}: format {body.get('format')!r}, expected {FORMAT} (made by "
                                  "another version of efficientllava: start a new run)")
        files = {"history": None, "projector": None}
        for key in files:
            ref = body.get(key)
            if ref is None:
                continue
            try:
                data = self.read(ref["file"])
            except Exception:
                raise CheckpointError(f"corrupt {where}: {ref.get('file', key)} is missing") from None
            if _sha256(data) != ref["sha256"]:
                raise CheckpointError(f"corrupt {where}: {ref['file']} does not match its sha256")
            files[key] = data
        if files["history"] is None:
            raise CheckpointError(f"corrupt {where}: no history recorded")
        try:
            history = pq.read_table(pa.BufferReader(files["history"]))
        except Exception:
            raise CheckpointError(f"corrupt {where}: {body['history']['file']} is not a Parquet file") from None
        if not history.schema.equals(HISTORY_SCHEMA) or history.num_rows != body["history"]["rows"]:
            raise CheckpointError(f"corrupt {where}: history table has an unexpected layout")
        return body, history, files["projector"]


def check_compatible(state: dict, identity: dict, param_counts: list, uri: str) -> None:
    """Refuse a checkpoint made for another model (identity, parameter counts)."""
    saved, mine = state.get("identity"), normalise(identity)
    if saved != mine:
        keys = sorted(k for k in set(saved or {}) | set(mine) if (saved or {}).get(k) != mine.get(k))
        raise CheckpointError(f"checkpoint in {uri} was made for another model (identity differs in: {', '.join(keys) or 'all'})")
    if state.get("param_counts") != param_counts:
        raise CheckpointError(f"checkpoint in {uri} was made for another model (parameter counts per policy entry differ)")


def read_history(run_dir: str) -> pa.Table:
    return RunStore(run_dir).load()[1]


def read_config(run_dir: str) -> dict[str, Any]:
    """The saved config as a dict (to build the evaluator before resuming)."""
    return RunStore(run_dir).load()[0]["config"]


def read_saved(run_dir: str) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
    """What a run directory says about its run: (search config, app slot or None, whether a checkpoint exists).
    From the last checkpoint, else from what the run wrote when it started (config.yaml, app.yaml); a
    CheckpointError when checkpoint files lost their state.json, a ConfigError when neither exists or a file
    is not valid YAML."""
    store = RunStore(run_dir)
    store.check_not_orphaned()
    if store.exists():
        state = store.load()[0]
        return state["config"], state.get("app"), True
    if not store.is_file(CONFIG):
        raise ConfigError(f"{run_dir}: no search run to resume (neither {STATE} nor {CONFIG} found)")
    saved = []
    for name in (CONFIG, APP):
        try:
            saved.append(yaml.safe_load(store.read(name)) if store.is_file(name) else None)
        except yaml.YAMLError:
            raise ConfigError(f"{run_dir}/{name} is not valid YAML") from None
    return saved[0], saved[1], False
