"""The pruning variants the ablation and accuracy-vs-sparsity benchmarks compare, run the same way.

Every variant at a target sparsity uses the same proxy (= calibration) data and seed; searches run
on Ray (a local cluster started once per benchmark) and end with the sequential re-prune of the
best policy; then the model is scored on held-out data (prune_engine.evaluation.heldout.heldout_metrics).
A finished variant is cached as JSON next to its outputs (keyed by its exact settings), so an
interrupted benchmark run continues where it stopped and two benchmarks share identical runs.

    uniform       uniform SparseGPT (every block at the target)
    owl           OWL-style per-block ratios (outlier ratio heuristic, lambda 0.08, M 5), SparseGPT
    auto_wo_gen   search with eta = 0 (no generalisation term), projector evolution on
    full          search with eta = 0.5, projector evolution with neighbour weights (EfficientLLaVA)
    no_evo        search with eta = 0.5, no projector update
    evo_wo_ub     search with eta = 0.5, projector update with all c_m equal
    full_ce_projector  Full, but the projector trained on answer cross-entropy (the fitness ranks by KL)
    full_ce_fitness    Full, with cross-entropy to the labels as the fitness's loss (the paper's) instead of KL
    full_rephrase      Full with half the image-text proxy questions asked in other wordings (the train templates):
                       paraphrase augmentation (issue 25)
    preset             the search exactly as the benchmark's preset sets it (no override: with `--preset quality`,
                       the quality preset; benchmarks/quality.py compares it with uniform and the default's Full)
    matrix, wide, matrix_wide, full_long, matrix_wide_long
                       Full with a level per matrix, levels p0 +- 0.2 (9, not 5), both, 10 generations (not 3),
                       and all three (issue 26: which part of a wider search's gain comes from where)
    wide_eta0, matrix_wide_eta0
                       wide and matrix_wide without the generalisation term (eta = 0)
    full_rerank        Full with --rerank 3: its best 3 policies and uniform pruned as the export prunes, re-scored
                       with the run's fitness, the best exported (issue 25)
    uniform_database   uniform SparseGPT as database mode scores it: every block pruned at the target from the dense
                       model's inputs, stitched (not layer-sequential), saved as it is
    full_database      Full's best policy stitched from the level database with the evolved projector: the model the
                       search scored, where Full's export re-prunes it sequentially (needs Full's run, as below)
    evo_masks_only     Full's policy re-pruned with the evolved projector, saved with the dense projector
    evo_answers_only   Full's policy re-pruned with the dense projector, saved with the evolved projector
    evo_both           Full's policy re-pruned with the evolved projector, saved with it (Full's recipe, re-run)
    evo_neither        Full's policy re-pruned with the dense projector, saved with it
                       (these four need Full's run at the same settings in the cache: they split what the
                       evolved projector does to Full's model, choosing its masks vs giving its answers;
                       the parts are compared with evo_both, and Full − evo_both is the rounding noise)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from efficientllava.prune_engine.config import HeldoutConfig

from benchmarks.common import machine_label

SEARCHES = {
    "auto_wo_gen": {"search.eta": 0.0},
    "full": {"search.eta": 0.5},
    "no_evo": {"search.eta": 0.5, "search.projector_mode": "off"},
    "evo_wo_ub": {"search.eta": 0.5, "search.projector_mode": "uniform"},
    # Full with the projector trained on answer cross-entropy while the fitness ranks by KL (the default before the
    # projector trained on the fitness's own loss): what one objective changes
    "full_ce_projector": {"search.eta": 0.5, "engine.projector_objective": "ce"},
    # Full with the paper's task loss: cross-entropy to the labels for the fitness (text and image-text) and hence for
    # the projector (one objective), where the default ranks by KL to the dense model (issue 23: KL vs CE on val)
    "full_ce_fitness": {"search.eta": 0.5, "engine.loss": "ce"},
    # the preset as it is (no override of its eta or anything else): another preset against the default's Full
    "preset": {},
    # paraphrase augmentation (issue 25): half the image-text proxy questions asked in the train templates' wordings
    "full_rephrase": {"search.eta": 0.5, "data.mm_rephrase": 0.5},
    # what buys what (issue 26): the search space (granularity x span) and the budget, each beside Full
    "matrix": {"search.eta": 0.5, "search.granularity": "matrix"},
    "wide": {"search.eta": 0.5, "search.span": 0.2},
    "matrix_wide": {"search.eta": 0.5, "search.granularity": "matrix", "search.span": 0.2},
    "full_long": {"search.eta": 0.5, "search.generations": 10},
    "matrix_wide_long": {"search.eta": 0.5, "search.granularity": "matrix", "search.span": 0.2,
                         "search.generations": 10},
    # the budget as wall time (a quality preset's candidate: what one hour of the machine at hand buys): Full's
    # 250 children a generation, generations until the hour is spent (the search stops between generations, so the
    # last may end past it); a count of generations means 20 minutes on one CPU and two hours on another
    "full_hour": {"search.eta": 0.5, "search.generations": 50, "search.time_budget_s": 3600.0,
                  "search.offspring_budget": False},
    # Auto w/o Gen searched as long as full_hour's hour bought on the AVX2 EPYC (8 generations): with the SRM term a
    # longer search kept lowering G and gave back proxy loss (benchmarks/results/fitness_terms.md); without it, F is -L
    "auto_wo_gen_long": {"search.eta": 0.0, "search.generations": 8},
    # ... and with the SRM term kept but its scale s measured on 16 random feasible policies (spread over the whole
    # span) instead of generation 0 (uniform and its mutations, where G hardly varies and s comes out large)
    "full_long_srm_sample": {"search.eta": 0.5, "search.generations": 8, "search.srm_sample": 16},
    # ... or measured again on every generation's population (search.srm_rescale)
    "full_long_rescale": {"search.eta": 0.5, "search.generations": 8, "search.srm_rescale": True},
    # ... and with the text's share of the fitness raised (w 0.25 instead of 0.5): held-out perplexity follows the
    # best's L_text, which an eta-0 search leaves near 2.49 while its image-text loss keeps falling (fitness_terms.md)
    "auto_text_long": {"search.eta": 0.0, "search.generations": 8, "search.mm_weight": 0.25},
    # the fitness's 4 text segments held aside from calibration (engine.fitness_held_aside): by default L_text is
    # measured on text SparseGPT fit, which flatters the levels whose reconstruction overfits it most
    "full_heldout": {"search.eta": 0.5, "engine.fitness_held_aside": True},
    "auto_heldout_long": {"search.eta": 0.0, "search.generations": 8, "engine.fitness_held_aside": True},
    # ... with as much calibrating text as Full: 36 segments drawn, the fitness's 4 held aside, 32 calibrate (the
    # two above calibrate on 28, which by itself costs perplexity: benchmarks/results/calibration_data.md)
    "full_heldout_36": {"search.eta": 0.5, "engine.fitness_held_aside": True, "data.nsamples": 36},
    # the wider spans without the SRM term: at eta 0.5 it bought the extreme levels with proxy loss (space_val_07_wide)
    "wide_eta0": {"search.eta": 0.0, "search.span": 0.2},
    "matrix_wide_eta0": {"search.eta": 0.0, "search.granularity": "matrix", "search.span": 0.2},
    # Full, its best 3 policies and uniform re-pruned as the export prunes and re-scored: the best exported (issue 25)
    "full_rerank": {"search.eta": 0.5, "search.rerank": 3},
    # Full with the projector's trust region (issue 25: what a one-task proxy's projector step costs the other task):
    # a generation's relative change bounded at 0.03 / 0.01 (unbounded Full's were 0.07-0.10 on smol-llava at 0.7)
    "full_tr03": {"search.eta": 0.5, "search.projector_max_change": 0.03},
    "full_tr01": {"search.eta": 0.5, "search.projector_max_change": 0.01},
}
#: the evolved projector's two effects on Full's model apart, a 2 x 2 design: Full's policy re-pruned from the
#: dense model with (the projector the masks are computed under, the projector the saved model answers with),
#: pruned as the search's export prunes (`CandidateScorer.prune_for_export`: every CPU). evo_both (evolved, evolved) is Full's recipe
#: re-run here and the base the other three are paired with; Full − evo_both checks that it reproduces Full's
#: model (it does on the machine and CPU count that ran the search: same calibration loss to the last digit).
#: Why the thread count: sequential SparseGPT at 0.7 amplifies rounding. Re-pruning Full's policy with the
#: bit-identical projector at 1 thread instead of the export's 2 gives block 0's q/k/v masks equal with weights
#: ~1e-5 apart, and from o_proj on the masks diverge (calibration loss 2.2662 vs the export's 2.2040, test seed 0;
#: benchmarks/results/reprune_rounding_1thread.md). On a tiny LLaVA the re-prune equals the actor's export bit for bit
#: (tests/test_actors_search.py).
EVO_PARTS = {"evo_both": ("evolved", "evolved"), "evo_masks_only": ("evolved", "dense"),
             "evo_answers_only": ("dense", "evolved"), "evo_neither": ("dense", "dense")}
#: the base the parts are paired with
EVO_BASE = "evo_both"
#: the model database mode scores against the sequential prune a run exports: {variant: the sequential variant}
DATABASE_EXPORTS = {"uniform_database": "uniform", "full_database": "full"}


#: the search-space and budget variants: run when asked for (--variants), not by default
SPACE_VARIANTS = ("matrix", "wide", "matrix_wide", "full_long", "matrix_wide_long", "full_hour", "auto_wo_gen_long",
                  "auto_text_long", "full_long_srm_sample", "full_long_rescale", "wide_eta0", "matrix_wide_eta0",
                  "full_heldout", "auto_heldout_long", "full_heldout_36")
#: the variants an ablation runs only when asked for (`preset` is Full itself under the default preset)
ON_REQUEST = (*SPACE_VARIANTS, "preset", "full_rephrase", "full_rerank", "full_tr03", "full_tr01", *DATABASE_EXPORTS)


def search_overrides(variant: str) -> dict | None:
    """The search settings a variant runs under (EVO_PARTS and full_database reuse Full's run: Full's)."""
    return SEARCHES["full"] if variant in EVO_PARTS or variant == "full_database" else SEARCHES.get(variant)


LABELS = {"dense": "Dense", "uniform": "Uniform SparseGPT", "owl": "OWL ratios + SparseGPT",
          "auto_wo_gen": "Auto w/o Gen (eta = 0)", "full": "Full (eta = 0.5)", "no_evo": "No Evo",
          "evo_wo_ub": "Evo w/o UB (c_m equal)", "full_ce_projector": "Full, projector on cross-entropy",
          "full_ce_fitness": "Full, cross-entropy fitness",
          "full_rephrase": "Full, half the image-text proxy reworded", "preset": "the preset as it is",
          "matrix": "Full, a level per matrix", "wide": "Full, levels p0 +- 0.2",
          "matrix_wide": "Full, per matrix, p0 +- 0.2", "full_long": "Full, 10 generations",
          "matrix_wide_long": "Full, per matrix, p0 +- 0.2, 10 generations",
          "full_hour": "Full, one hour of search",
          "auto_wo_gen_long": "Auto w/o Gen (eta = 0), 8 generations",
          "auto_text_long": "Auto w/o Gen, 8 generations, w = 0.25",
          "full_heldout": "Full, fitness text held aside from calibration",
          "auto_heldout_long": "Auto w/o Gen, 8 generations, fitness text held aside",
          "full_heldout_36": "Full, fitness text held aside, 32 segments calibrate",
          "full_long_srm_sample": "Full, 8 generations, s from 16 random policies",
          "full_long_rescale": "Full, 8 generations, s measured every generation",
          "wide_eta0": "levels p0 +- 0.2, eta = 0", "matrix_wide_eta0": "per matrix, p0 +- 0.2, eta = 0",
          "full_rerank": "Full, best 3 re-pruned and re-ranked",
          "full_tr03": "Full, projector trust region 0.03", "full_tr01": "Full, projector trust region 0.01",
          "uniform_database": "Uniform, stitched from the level database",
          "full_database": "Full's policy stitched from the level database",
          "evo_masks_only": "Full, evolved projector for the masks only",
          "evo_answers_only": "Full, evolved projector for the answers only",
          "evo_both": "Full's policy re-pruned, evolved projector for both",
          "evo_neither": "Full's policy re-pruned, dense projector for both"}


#: settings added after results were cached: at their default they change no result, so they enter a
#: cache key only when set (the finished runs of earlier commits stay valid)
ADDED_SETTINGS = (("data", "mm_balance", False), ("data", "mm_rephrase", 0.0), ("search", "rerank", 0),
                  ("search", "srm_rescale", False), ("engine", "fitness_held_aside", False),
                  ("search", "projector_max_change", None))


def drop_added_settings(resolved: dict) -> dict:
    """`resolved` ({section: {leaf: value}}) without the ADDED_SETTINGS that are at their default."""
    for section, leaf, default in ADDED_SETTINGS:
        if resolved.get(section, {}).get(leaf, default) == default:
            resolved.get(section, {}).pop(leaf, None)
    return resolved


class Settings(BaseModel):
    """One set of settings shared by every variant of a benchmark (hashed into the cache key). The
    search settings are a preset's (actors.config.PRESETS) plus `search`/`engine`/`data` overrides;
    the uniform and OWL baselines calibrate on exactly the search's calibration data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "smol-llava"
    preset: str = "default"
    search: dict = {}  # e.g. {"generations": 4}
    engine: dict = {}  # e.g. {"loss": "ce"}
    data: dict = {"calib": "wiki:calib", "mm_calib": "easy-vqa:train,fashion-mnist:train"}  # e.g. mm_samples
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    seed: int = 0
    heldout: HeldoutConfig = HeldoutConfig(segments=64, seqlen=256, vqa=1000, seed=0)  # the same for every variant
    actors: int | None = None

    def key(self, variant: str, target: float) -> str:
        """Cache key: the variant and everything that decides its result, the resolved search, engine
        and data settings included (so a changed preset default never hits a stale cache entry)."""
        if variant == "dense":  # nothing but the model decides it
            resolved: dict = {"model": self.model}
        elif variant in ("uniform", "owl"):  # the model and the calibration data (no search, no engine setting)
            resolved = drop_added_settings({"model": self.model, "data": self.run_config(target).data.model_dump()})
        else:
            resolved = self._resolved_search(variant, target)
        data = self.model_dump(include={"owl_lambda", "owl_m", "heldout"})
        blob = json.dumps({"variant": variant, "target": target, "seed": self.seed, **data, "resolved": resolved},
                          sort_keys=True)
        return f"{variant}-{target:g}-s{self.seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def search_key(self, variant: str, target: float) -> str:
        """A search's run directory: named by what decides the search alone (its resolved settings, target and
        seed), not by how its model is then evaluated (held-out split and size, OWL's settings) nor by the
        variant's name. One search so serves a validation and a test evaluation, and a preset that resolves to a
        variant's settings reuses that variant's run."""
        blob = json.dumps({"target": target, "seed": self.seed, "resolved": self._resolved_search(variant, target)},
                          sort_keys=True)
        return f"search-{target:g}-s{self.seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def _resolved_search(self, variant: str, target: float) -> dict:
        resolved = self.run_config(target, search_overrides(variant)).sections()
        resolved.pop("ray", None)  # runtime only: never changes a result
        return drop_added_settings(resolved)

    def run_config(self, target: float, overrides: dict | None = None):
        from efficientllava.actors.config import RunConfig

        return RunConfig.load(preset=self.preset, overrides={
            **{f"search.{k}": v for k, v in self.search.items()}, **{f"engine.{k}": v for k, v in self.engine.items()},
            **{f"data.{k}": v for k, v in self.data.items()}, "search.target": target, "search.seed": self.seed,
            "engine.model": self.model, "ray.actors": self.actors, **(overrides or {})})


def search_dir(settings: Settings, variant: str, target: float, work: Path, log=print) -> Path:
    """Where a search variant's run lives (`Settings.search_key`). A run made before searches were keyed apart from
    their evaluation (in the directory named by the variant's cache key) is moved there first, so neither a
    finished search nor an interrupted one is lost."""
    path = work / settings.search_key(variant, target)
    legacy = work / settings.key(variant, target)
    if not path.exists() and legacy.is_dir():
        log(f"  {variant} at {target} (seed {settings.seed}): its search moves from {legacy.name} to {path.name}")
        legacy.rename(path)
    return path


def shorter_run(settings: Settings, variant: str, target: float, work: Path) -> tuple[Path, int] | None:
    """A run directory in `work` (a search's or an anytime curve's) of exactly this variant's search with at most
    its generations done (the one with the most), and its generation: resumed with search.generations raised, it
    goes on as an uninterrupted run of the full length would (search/driver.py; the anytime curve's points equal
    the uninterrupted runs' rows), so a longer budget need not search its first generations again."""
    from efficientllava.actors.config import RunConfig
    from efficientllava.search.checkpoint import STATE, RunStore

    def comparable(run) -> dict:  # every setting that decides the search, its length and where it runs aside
        sections = run.sections(without=("search.generations",))
        sections.pop("ray", None)
        return drop_added_settings(sections)

    want = settings.run_config(target, SEARCHES[variant])
    mine, found = comparable(want), None
    for run_dir in sorted(p for p in work.iterdir() if (p / STATE).is_file()) if work.is_dir() else []:
        try:  # the checkpoint read once: its search config, app slot and generation
            state = RunStore(str(run_dir)).load()[0]
            same = comparable(RunConfig.from_saved(state["config"], app=state.get("app"))) == mine
            done = state["generation"]
        except Exception:  # noqa: BLE001 - a directory that is not a readable run is simply not a candidate
            continue
        if same and done <= want.search.generations and (found is None or done > found[1]):
            found = (run_dir, done)
    return found


def history_counts(run_dir: Path) -> dict:
    """Candidates a search evaluated, all generations (the run's history; a resumed run's own pool counts only what
    it evaluated after the resume), how many of them were screened on a slice, and the search's own wall time
    over all its generations (the checkpoint's elapsed_s, summed over resumes: actor start-up, the level database
    and the export are not in it; the row's prune_seconds is what this evaluation spent, search included if it
    ran here)."""
    import pyarrow.parquet as pq

    from efficientllava.search.checkpoint import STATE

    fidelity = pq.read_table(run_dir / "history.parquet", columns=["fidelity"]).column("fidelity").to_pylist()
    state = json.loads((run_dir / STATE).read_text()) if (run_dir / STATE).exists() else {}
    return {"evaluated": len(fidelity), "screened": fidelity.count("screen"), "search_seconds": state.get("elapsed_s")}


def provenance(rows, here: str) -> str:
    """A note on the rows (result rows of run_variant) not computed on this machine (`here`, a machine_label):
    read from a cache another machine wrote, or cached before rows recorded where they were made. Empty when
    every row is this machine's. Variants compare fairly only on one machine (docs/method.md "Another CPU")."""
    def name(r: dict) -> str:
        return r["variant"] + ("" if r.get("target") is None else f" at {r['target']}") + f" (seed {r['seed']})"

    elsewhere: dict[str, list[str]] = {}
    restored: dict[str, list[str]] = {}
    unknown = []
    for r in rows:
        if r.get("computed_on") is None and r.get("restored_from"):
            restored.setdefault(r["restored_from"], []).append(name(r))
        elif r.get("computed_on") is None:
            unknown.append(name(r))
        elif r["computed_on"] != here:
            elsewhere.setdefault(r["computed_on"], []).append(name(r))
    def listed(names: list[str]) -> str:  # a row reported in several cells (a cross-task uniform) named once
        return ", ".join(dict.fromkeys(names))

    parts = [f"Rows computed on another machine ({where}): {listed(names)}." for where, names in elsewhere.items()]
    parts += [f"Rows that do not record their machine, restored from a results file written on {where} (the "
              f"file's machine, possibly not the row's): {listed(names)}." for where, names in restored.items()]
    if unknown:
        parts.append("Rows that do not record their machine (cached before rows did; possibly another machine's): "
                     + listed(unknown) + ".")
    return " ".join(parts)


def run_variant(variant: str, target: float | None, settings: Settings, work: Path, log=print,
                cached_only: bool = False) -> dict | None:
    """Prune (or search) one variant, evaluate it, cache and return its row (with `cached_only`: the
    cached row, or None when there is none)."""
    from efficientllava.prune_engine.evaluation.heldout import heldout_metrics

    key = settings.key(variant, target if target is not None else 0.0)
    cached = work / f"{key}.json"
    if cached.exists():
        row = json.loads(cached.read_text())
        log(f"  {variant} at {target} (seed {settings.seed}): cached ({cached.name})")
        return row
    if cached_only:
        log(f"  {variant} at {target} (seed {settings.seed}): not run yet")
        return None
    out = search_dir(settings, variant, target, work, log) if variant in SEARCHES else work / key
    from efficientllava.search.checkpoint import RunStore

    # a search interrupted here (its directory is named by every setting that decides it) goes on from its last
    # checkpoint; anything else half-written starts again
    resuming = variant in SEARCHES and RunStore(str(out)).exists()
    if not resuming:
        shutil.rmtree(out, ignore_errors=True)
    if variant in SEARCHES and not resuming and (shorter := shorter_run(settings, variant, target, work)):
        log(f"  {variant} at {target} (seed {settings.seed}): grows {shorter[0].name} (the same search, "
            f"{shorter[1]} generations done)")
        shutil.copytree(shorter[0], out, ignore=shutil.ignore_patterns("model"))  # the copy's source stays as it is
        resuming = True
    t0 = time.perf_counter()
    row: dict = {"variant": variant, "target": target, "seed": settings.seed}
    if variant == "dense":
        model_dir = settings.model
    elif variant in ("uniform", "owl"):
        from efficientllava.prune_engine.prune import PruneJob, run_prune

        data = settings.run_config(target).data  # the search's calibration data, exactly
        summary = run_prune(PruneJob(model=settings.model, out=out, sparsity=target, data=data, progress=False,
                                     owl=settings.owl_lambda if variant == "owl" else None, owl_m=settings.owl_m),
                            log=lambda m: None)
        model_dir, row["ratios"] = str(out), summary["ratios"]
    elif variant in SEARCHES:
        from efficientllava.actors.run import resume_search, run_search

        def search_log(message: str) -> None:  # the search's own lines (a generation each), in the benchmark's log
            log(f"    {variant} at {target} (seed {settings.seed}): {message}")

        if resuming:
            log(f"  {variant} at {target} (seed {settings.seed}): resuming the search in {out}")
            summary = resume_search(str(out), progress=False, log=search_log,
                                    generations=settings.run_config(target, SEARCHES[variant]).search.generations)
        else:
            summary = run_search(settings.run_config(target, SEARCHES[variant]), str(out), progress=False,
                                 log=search_log)
        doc = summary["policy"]
        model_dir = summary["model_dir"]
        row.update(ratios=doc["ratios"], fitness=doc["fitness"], l_proxy=doc["l_proxy"], g=doc["g"],
                   **history_counts(out), run=out.name)
        if doc.get("rerank"):
            row.update(scored_as=doc.get("scored_as"), rerank=rerank_record(out))
    elif variant in DATABASE_EXPORTS:
        if variant == "full_database":
            ratios, projector = full_outcome(search_dir(settings, "full", target, work, log))
        else:
            ratios, projector = None, None
        run = settings.run_config(target, search_overrides(variant))
        ratios, report = stitch_from_database(run.engine, run.data, target, ratios, projector, out)
        model_dir, row["ratios"], row["calibration_loss"] = str(out), ratios, report.loss
    elif variant in EVO_PARTS:
        ratios, evolved = full_outcome(search_dir(settings, "full", target, work, log))
        run = settings.run_config(target, search_overrides(variant))
        report = prune_with_projectors(run.engine, run.data, ratios, evolved, *EVO_PARTS[variant], out)
        model_dir, row["ratios"], row["calibration_loss"] = str(out), [float(r) for r in ratios], report.loss
    else:
        raise ValueError(f"unknown variant {variant}")
    row["prune_seconds"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    row.update(heldout_metrics(model_dir, settings.heldout))  # the same held-out questions for all
    row["eval_seconds"] = time.perf_counter() - t1
    if variant in SEARCHES:  # the run stays (a later evaluation of the same search re-exports from it)
        shutil.rmtree(out / "model", ignore_errors=True)  # weights: GBs
    elif variant != "dense":
        shutil.rmtree(out, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    row["computed_on"] = machine_label()  # a cache can travel (--restore-cache): rows say where they were made
    cached.write_text(json.dumps(row, indent=2))
    log(f"  {variant} at {target} (seed {settings.seed}): sparsity {row['sparsity']:.4f}, "
        + ", ".join(f"{m} {row[m]:.{2 if lower_is_better(m) else 3}f}" for m in METRICS if m in row)
        + f" ({row['prune_seconds']:.0f} s + {row['eval_seconds']:.0f} s eval)")
    return row


def rerank_record(run_dir: Path) -> list[dict]:
    """The re-rank of a finished search (search.rerank) as its history.parquet holds it
    (efficientllava.actors.report.rerank_records: each re-pruned policy's search and export scores)."""
    import pyarrow.parquet as pq

    from efficientllava.actors.report import rerank_records

    return rerank_records(pq.read_table(run_dir / "history.parquet").to_pydict())


def full_outcome(run_dir: Path):
    """Full's best ratios and the projector its final model was pruned with and saved with (the last
    checkpoint's, the version policy.json names), from its finished run directory."""
    import numpy as np

    from efficientllava.prune_engine.tensors import deserialise
    from efficientllava.search.checkpoint import RunStore

    if not (run_dir / "policy.json").exists():
        raise FileNotFoundError(f"no finished Full run at {run_dir}: run the 'full' variant at these settings first")
    doc = json.loads((run_dir / "policy.json").read_text())
    state, _, projector = RunStore(str(run_dir)).load()
    if projector is None or state["projector_version"] != doc["projector_version"]:
        raise ValueError(f"{run_dir}: the last checkpoint does not hold the projector of the final model "
                         f"(version {state['projector_version']} vs policy.json's {doc['projector_version']})")
    ratios = np.asarray(doc["levels"], dtype=np.int64)
    return np.asarray(doc["level_values"], dtype=np.float64)[ratios], deserialise(projector)["params"]


def stitch_from_database(engine, data, target: float, ratios, projector: dict | None, out: Path):
    """A policy's model as database mode scores it, saved at `out`: the dense model's blocks pruned at the policy's
    ratios from the dense inputs (a level database of exactly those ratios, the dense projector's image-text
    activations, as the search builds it), stitched, run with `projector` (None: the dense one; the image-text
    inputs are then recomputed through it, as after a projector step), saved with it. `ratios` None: uniform at
    `target`. Returns (ratios, the stitched model's report on all the proxy data)."""
    import numpy as np

    from efficientllava.prune_engine.pipeline import round_ratio
    from efficientllava.prune_engine.scoring import CandidateScorer

    scorer = CandidateScorer(engine.model_copy(update={"mode": "database"}), data, build_database=False)
    per_block = 1 if engine.granularity == "block" else len(scorer.adapter.linears(0))
    ratios = (np.full(scorer.adapter.num_blocks * per_block, target) if ratios is None
              else np.asarray(ratios, dtype=np.float64))
    scorer.pruner.build_database(sorted({round_ratio(r) for r in ratios}))  # with the dense projector, as a search
    if projector is not None:
        scorer.set_projector(projector, 1)
    policy = scorer.policy(ratios)
    report = scorer.pruner.stitch(policy)  # installs the stitched weights, measured on every proxy batch
    scorer.save(out, report, {"ratios": [float(r) for r in ratios], "export": "database (stitched)",
                              "projector": "dense" if projector is None else "evolved"})
    return [float(r) for r in ratios], report


def prune_with_projectors(engine, data, ratios, evolved: dict, masks: str, answers: str, out: Path,
                          threads: int | None = None):
    """Prune the dense model sequentially with `ratios` while the projector is `masks` ("dense" or "evolved":
    the image-text calibration activations, hence the Hessians and masks, come through it), then save the
    model at `out` with the projector `answers`. Returns the prune report. The scorer is built as an evaluator
    actor builds it and the prune runs as the actor's export runs it (`CandidateScorer.prune_for_export`: every
    CPU, or `threads`), so (evolved, evolved) on the machine that ran the search gives the search's model."""
    import numpy as np

    from efficientllava.prune_engine.scoring import CandidateScorer

    scorer = CandidateScorer(engine, data, build_database=False)
    states = {"dense": scorer.projector_state_dict(), "evolved": evolved}
    scorer.set_projector(states[masks], 0 if masks == "dense" else 1)
    report = scorer.prune_for_export(np.asarray(ratios, dtype=np.float64), threads)
    scorer.adapter.projector.load_state_dict(states[answers])  # the saved model answers through this one
    scorer.save(out, report, {"ratios": [float(r) for r in ratios], "masks_projector": masks,
                              "answers_projector": answers})
    return report


#: held-out columns (heldout_metrics' keys): in-distribution, then shifted (another text domain, other wordings)
METRICS = ("ppl", "easy_vqa", "fashion_mnist", "ppl_pydoc", "easy_vqa_rephrased", "fashion_mnist_rephrased")


def lower_is_better(metric: str) -> bool:
    return metric.startswith("ppl")


def difference(base: dict, other: dict, metric: str) -> float:
    """`other` against `base` on one metric: perplexity as % change, accuracy in points."""
    if lower_is_better(metric):
        return 100 * (other[metric] - base[metric]) / base[metric]
    return 100 * (other[metric] - base[metric])


def question_noise(base: dict, other: dict, metric: str, questions: int) -> float:
    """How far the held-out questions alone can move one draw's accuracy difference, in points: 1.96 x its standard
    error were the two models' answers independent (an upper bound: they answer the same questions)."""
    from efficientllava.prune_engine.evaluation.vqa import difference_noise

    return difference_noise(base[metric], other[metric], questions)


def paired(base: list[dict], other: list[dict], questions: int | None = None) -> dict:
    """Per metric, `other` against `base` seed by seed (the same calibration draw for both): the per-seed
    differences (perplexity as % change, accuracy in points), their mean and sd, and on how many seeds
    `other` is ahead (lower perplexity, higher accuracy). With `questions` (per VQA set), each accuracy also gets
    `draw_noise`: how far one draw's difference can move by the questions alone, 1.96 x its standard error in points
    were the two models' answers independent (mean over the draws); the two answer the same questions, so their
    errors correlate and the true figure is smaller: a difference inside it is within noise."""
    import numpy as np

    by_seed = {r["seed"]: r for r in base}
    pairs = [(by_seed[r["seed"]], r) for r in other if r["seed"] in by_seed]
    out = {"seeds": [b["seed"] for b, _ in pairs]}
    for m in METRICS:
        if not pairs or any(m not in b or m not in o for b, o in pairs):
            continue
        d = np.array([difference(b, o, m) for b, o in pairs])
        wins = int(sum((x < 0) if lower_is_better(m) else (x > 0) for x in d))
        out[m] = {"per_seed": [float(x) for x in d], "mean": float(d.mean()),
                  "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "wins": wins, "n": len(d),
                  "unit": "% change" if lower_is_better(m) else "points"}
        if questions and not lower_is_better(m):
            out[m]["draw_noise"] = float(np.mean([question_noise(b, o, m, questions) for b, o in pairs]))
    return out


def over_seeds(rows: list[dict]) -> dict:
    """Mean and sd of the held-out metrics over calibration seeds; per-seed rows kept."""
    import numpy as np

    out = dict(rows[0])
    for m in ("sparsity", *(m for m in METRICS if all(m in r for r in rows))):
        values = np.array([r[m] for r in rows], dtype=np.float64)
        out[m], out[f"{m}_sd"] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
    out["seeds"] = [r["seed"] for r in rows]
    out["per_seed"] = rows
    return out


def ray_started(settings: Settings):
    """One local Ray cluster for all the searches of a benchmark (run_search reuses a connection)."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # join a running cluster (several benchmarks sharing one machine)
            ray.init(namespace="efficientllava", log_to_driver=False)
        else:
            # address="local": a new cluster, never one that another process (a test's cluster) left as current
            ray.init(address="local", namespace="efficientllava", include_dashboard=False, log_to_driver=False)
    return ray
