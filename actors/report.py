"""`efficientllava report RUN_DIR`: a Markdown + HTML report of a search run, plots as PNG files.

Reads what a finished search writes (policy.json, history.parquet; demo.json when the run came from
`efficientllava demo`) and draws: the fitness curve per generation, the per-block policy heatmap of
every generation's best candidate, and the neighbour weights c_m against fitness.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


class ReportError(ValueError):
    """A run directory the report cannot read (one-line message)."""


def _load(run_dir: Path) -> tuple[dict, dict]:
    policy_file, history_file = run_dir / "policy.json", run_dir / "history.parquet"
    for f in (policy_file, history_file):
        if not f.exists():
            raise ReportError(f"{run_dir}: no {f.name} (is this a finished `efficientllava search` run directory?)")
    try:
        policy = json.loads(policy_file.read_text())
        history = pq.read_table(history_file).to_pydict()
    except Exception as exc:  # corrupt files of any kind
        raise ReportError(f"{run_dir}: cannot read the run's files: {str(exc).splitlines()[0]}") from None
    if not history.get("generation"):
        raise ReportError(f"{run_dir}: history.parquet holds no evaluated candidates")
    return policy, history


def run_model(run_dir: str | Path) -> str | None:
    """The --model of a run directory (search or demo), None when it cannot be read."""
    run_dir = Path(run_dir)
    for f in (run_dir / "policy.json", run_dir / "search" / "policy.json"):
        try:
            return json.loads(f.read_text()).get("model")
        except (OSError, ValueError, AttributeError):
            continue
    return None


def _full_rows(history: dict) -> dict:
    """The rows of the generations' populations (screened children are scored on a slice only)."""
    keep = [i for i, f in enumerate(history.get("fidelity") or ["full"] * len(history["generation"])) if f == "full"]
    return {k: [v[i] for i in keep] for k, v in history.items()}


def _per_generation(history: dict) -> dict:
    """Per generation: best and mean fitness of the population, its best candidate, the children
    screened for it (at its start), and the search-space evolution records."""
    fidelity = history.get("fidelity") or ["full"] * len(history["generation"])
    screened = [g for g, f in zip(history["generation"], fidelity) if f == "screen"]
    history = _full_rows(history)
    gens = np.asarray(history["generation"])
    fit = np.asarray(history["fitness"])
    out = {"generation": [], "best": [], "mean": [], "best_policy": [], "best_l_proxy": [], "best_g": [],
           "screened": [], "effective": [], "loss_before": [], "loss_after": [], "change": [], "scale": []}
    for t in sorted(set(gens.tolist())):
        idx = np.flatnonzero(gens == t)
        b = idx[np.argmax(fit[idx])]
        out["generation"].append(t)
        out["best"].append(float(fit[b]))
        out["mean"].append(float(fit[idx].mean()))
        out["best_policy"].append(list(history["policy"][b]))
        out["best_l_proxy"].append(float(history["l_proxy"][b]))
        out["best_g"].append(float(history["g"][b]))
        out["screened"].append(screened.count(t))
        for key, col in (("effective", "effective_candidates"), ("loss_before", "projector_loss_before"),
                         ("loss_after", "projector_loss_after"), ("change", "projector_change"),
                         ("scale", "projector_scale")):
            value = (history.get(col) or [None] * len(gens))[int(idx[0])]
            out[key].append(float("nan") if value is None else float(value))
    return out


def rerank_records(history: dict) -> list[dict]:
    """The re-rank (search.rerank) of a run from its history columns: per re-pruned policy ("export" rows, in the
    search's order) its generation and candidate number (-1: the added uniform policy), the search's fitness of it
    (None when the search did not score it), and its export prune's fitness, L_proxy, G, L_text, L_mm and mean
    sparsity."""
    fidelity = history.get("fidelity") or []
    searched = {(history["generation"][i], history["candidate"][i]): history["fitness"][i]
                for i, f in enumerate(fidelity) if f == "full"}
    column = lambda k: history.get(k) or [None] * len(fidelity)  # noqa: E731  (a column an older history lacks)
    return [{"generation": history["generation"][i], "candidate": history["candidate"][i],
             "search_fitness": searched.get((history["generation"][i], history["candidate"][i])),
             **{k: column(k)[i] for k in ("fitness", "l_proxy", "g", "l_text", "l_mm", "mean_sparsity")}}
            for i, f in enumerate(fidelity) if f == "export"]


def ranking_records(history: dict, eta: float | None) -> list[dict]:
    """Per generation, what ranked its population (full-fidelity candidates) by F = -L - eta*s*G
    (`search.fitness.ranking_terms`: the spread of L and of eta*s*G, and the share of pairs -L alone and -G
    alone order as F does), with the best candidate's L and L_text and the lowest of each among them (L_text None
    when the history lacks it). [] when the history lacks the SRM scale (an older run) or eta is unknown."""
    from efficientllava.search.fitness import ranking_terms

    rows = _full_rows(history)
    scales = rows.get("srm_scale") or []
    if eta is None or not scales or any(v is None for v in scales):
        return []
    gens = np.asarray(rows["generation"])
    loss, g, fit = (np.asarray(rows[k], dtype=float) for k in ("l_proxy", "g", "fitness"))
    text = np.asarray([np.nan if v is None else v for v in rows.get("l_text") or [None] * len(gens)], dtype=float)
    out = []
    for t in sorted(set(gens.tolist())):
        idx = np.flatnonzero(gens == t)
        finite = idx[np.isfinite(fit[idx])]
        if not finite.size:
            continue
        terms = ranking_terms(loss[idx], g[idx], float(eta), float(scales[int(idx[0])]))
        best = finite[np.argmax(fit[finite])]
        has_text = bool(np.isfinite(text[finite]).any())
        out.append({"generation": int(t), **terms, "best_l": float(loss[best]), "lowest_l": float(loss[finite].min()),
                    "best_l_text": float(text[best]) if has_text else None,
                    "lowest_l_text": float(np.nanmin(text[finite])) if has_text else None})
    return out


def _rerank_rows(history: dict, policy: dict) -> list[list]:
    """The report's table of the re-rank: a row per re-pruned policy and which was exported (the driver's choice:
    the first best finite export fitness, when policy.json says the result was scored as exported)."""
    records = rerank_records(history)
    if not records:
        return []
    fit = np.asarray([r["fitness"] for r in records], dtype=float)
    chosen = (int(np.argmax(np.where(np.isfinite(fit), fit, -np.inf)))
              if policy.get("scored_as") == "export" and np.isfinite(fit).any() else None)
    rows = [[f"generation {r['generation']}, candidate {r['candidate']}" if r["candidate"] >= 0 else "uniform",
             float("nan") if r["search_fitness"] is None else float(r["search_fitness"]), float(r["fitness"]),
             float(r["l_proxy"]), float(r["g"]), float(r["mean_sparsity"]), "yes" if k == chosen else ""]
            for k, r in enumerate(records)]
    if chosen is None:
        rows.append(["(none chosen: the search's own best was kept)", "", "", "", "", "", ""])
    return rows


def _plots(out_dir: Path, policy: dict, history: dict, per_gen: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    files = {}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(per_gen["generation"], per_gen["best"], "o-", label="best F")
    ax.plot(per_gen["generation"], per_gen["mean"], "s--", label="mean F", alpha=0.7)
    ax.set_xlabel("generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("fitness F = -L_proxy - eta*G")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "fitness.png", dpi=120)
    plt.close(fig)
    files["fitness"] = "fitness.png"

    values = np.asarray(policy.get("level_values") or [])
    grid = np.asarray(per_gen["best_policy"], dtype=float)
    if values.size:
        grid = values[grid.astype(int)]
    fig, ax = plt.subplots(figsize=(max(6, grid.shape[1] * 0.25), 1 + 0.4 * grid.shape[0]))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xlabel("policy entry (decoder block)" if policy.get("granularity", "block") == "block" else "matrix")
    ax.set_ylabel("generation (best)")
    ax.set_yticks(range(len(per_gen["generation"])), per_gen["generation"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(im, ax=ax, label="sparsity")
    fig.tight_layout()
    fig.savefig(out_dir / "policy_heatmap.png", dpi=120)
    plt.close(fig)
    files["policy_heatmap"] = "policy_heatmap.png"

    fig, ax = plt.subplots(figsize=(6, 3.5))
    history = _full_rows(history)
    gens = np.asarray(history["generation"])
    sc = ax.scatter(history["c_m"], history["fitness"], c=gens, cmap="plasma", s=18)
    ax.set_xlabel("neighbour weight c_m")
    ax.set_ylabel("fitness F")
    bar = fig.colorbar(sc, ax=ax, label="generation")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "neighbour_weights.png", dpi=120)
    plt.close(fig)
    files["neighbour_weights"] = "neighbour_weights.png"
    return files


def _md_table(headers: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                     + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


BENCHMARKS = (("ablation", "Ablation (benchmark)"), ("accuracy_vs_sparsity", "Accuracy vs sparsity (benchmark)"),
              ("eta_sweep", "eta sweep on Ray Tune (benchmark)"), ("search_cost", "Search cost (benchmark)"),
              ("quality", "The quality preset on test (benchmark)"),
              ("anytime", "Anytime curves: the best policy so far against search time (benchmark)"),
              ("space_budget", "What buys what: granularity x span x budget (benchmark)"),
              ("deepsparse_speed", "DeepSparse CPU speed (benchmark)"))
DEFAULT_BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _benchmark_sections(results: Path, out_dir: Path) -> list[tuple[str, str]]:
    """The tables (and plots) of the benchmark result files present in `results`."""
    import shutil

    sections = []
    for name, title in BENCHMARKS:
        md = results / f"{name}.md"
        if not md.exists():
            continue
        body = "\n".join(line for line in md.read_text().splitlines() if not line.startswith("# ")).strip()
        png = results / f"{name}.png"
        if png.exists():
            shutil.copyfile(png, out_dir / png.name)
            body += f"\n\n![{name}]({png.name})"
        sections.append((title, body))
    return sections


def write_report(run_dir: str | Path, out: str | Path | None = None,
                 benchmarks: str | Path | None = None) -> Path:
    """Write report.md, report.html and the PNG plots into `out` (default RUN_DIR/report).

    `benchmarks`: a folder of benchmark results whose tables and plots are appended (None: none;
    the CLI passes this repository's benchmarks/results for smol-llava runs only)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    search_dir = run_dir / "search" if (run_dir / "search" / "policy.json").exists() else run_dir
    policy, history = _load(search_dir)
    out_dir = Path(out) if out else run_dir / "report"
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir}: a file is in the way (expected a directory)")
    out_dir.mkdir(parents=True, exist_ok=True)
    per_gen = _per_generation(history)
    plots = _plots(out_dir, policy, history, per_gen)

    summary = [["model", policy.get("model", "?")], ["target sparsity", policy.get("target", "?")],
               ["achieved mean sparsity", policy.get("achieved_mean_sparsity", policy.get("mean_sparsity", "?"))],
               ["fitness F", policy.get("fitness")], ["L_proxy", policy.get("l_proxy")], ["G", policy.get("g")],
               ["eta", policy.get("eta")], ["generations", policy.get("generations")],
               ["projector mode / versions", f"{policy.get('projector_mode')} / {policy.get('projector_version')}"],
               ["candidates evaluated", int(np.sum(~np.asarray(history["cached"])))]]
    if policy.get("rerank"):
        summary.append(["re-rank / exported policy scored as", f"{policy['rerank']} / {policy.get('scored_as')}"])
    gen_rows = [list(r) for r in zip(per_gen["generation"], per_gen["best"], per_gen["mean"], per_gen["best_l_proxy"],
                                     per_gen["best_g"], per_gen["screened"], per_gen["effective"],
                                     per_gen["loss_before"], per_gen["loss_after"], per_gen["scale"],
                                     per_gen["change"])]
    ratios = policy.get("ratios", [])
    sections = [("Summary", _md_table(["", "value"], summary)),
                ("Fitness per generation", _md_table(["generation", "best F", "mean F", "best L_proxy", "best G",
                                                      "children screened", "1/sum c^2", "sum c L before",
                                                      "sum c L after", "update kept", "projector change"],
                                                     gen_rows)
                 + "\n\n1/sum c^2 is the effective number of candidates the neighbour weights spread over; "
                 "sum c L before/after is the drawn candidates' answer-token loss on held-aside image-text samples "
                 "around the projector update; update kept is the fraction of it the guard kept (0: dropped)."
                 f"\n\n![fitness]({plots['fitness']})"),
                ("Best policy per block", "`" + json.dumps(ratios) + "`\n\n"
                 f"![policy heatmap]({plots['policy_heatmap']})"),
                ("Neighbour weights", "Each candidate's neighbour weight c_m (softmax of minus the summed squared "
                 "distance, in level steps, to its nearest other candidates) against its fitness.\n\n"
                 f"![neighbour weights]({plots['neighbour_weights']})")]
    ranking = ranking_records(history, policy.get("eta"))
    if ranking:
        sections.insert(2, ("What ranked the candidates", _md_table(
            ["generation", "candidates", "spread of L_proxy", "spread of eta s G", "pairs -L orders as F",
             "pairs -G orders as F", "best's L_proxy", "lowest L_proxy"],
            [[r["generation"], r["candidates"], r["l_spread"], r["srm_spread"], r["by_l"], r["by_g"], r["best_l"],
              r["lowest_l"]] for r in ranking])
            + "\n\nF = -L_proxy - eta s G. A pair column is the share of candidate pairs that the term alone "
            "orders as F does (1: it alone gives F's ranking; 1/2: it says nothing about it). When eta s G spreads "
            "far wider than L_proxy, the SRM term decides which policies survive and the proxy loss hardly counts "
            "(s is fixed once, from generation 0's candidates, unless search.srm_sample or search.srm_rescale is "
            "set)."))
    rerank = _rerank_rows(history, policy)
    if rerank:
        sections.insert(2, ("Re-rank of the final candidates", _md_table(
            ["policy", "search's F", "export F", "export L_proxy", "export G", "mean sparsity", "exported"], rerank)
            + "\n\nThe last generation's best distinct policies and the uniform policy, each pruned as the final "
            "model is (layer-sequential from the dense model under the final projector) and scored with the run's "
            "fitness on all proxy data (`--rerank`); the best of them is exported. The search's F is the score it "
            "ranked the policy by (in database mode, its blocks pruned from dense inputs and stitched)."))
    demo = run_dir / "demo.json"
    if demo.exists():
        from efficientllava.actors.demo import COLUMNS

        rows = json.loads(demo.read_text())["rows"]
        keys = [k for k in COLUMNS if any(k in r for r in rows.values())]  # in-distribution and shifted
        sections.insert(1, ("Held-out comparison", _md_table(
            ["model", "sparsity", *(COLUMNS[k] for k in keys)],
            [[n, r["sparsity"], *(r.get(k, float("nan")) for k in keys)] for n, r in rows.items()])))
    if benchmarks is not None and Path(benchmarks).is_dir():
        sections += _benchmark_sections(Path(benchmarks), out_dir)
    md = [f"# EfficientLLaVA search report: {run_dir.name}", ""]
    for title, body in sections:
        md += [f"## {title}", "", body, ""]
    (out_dir / "report.md").write_text("\n".join(md))
    (out_dir / "report.html").write_text(_html(run_dir.name, sections))
    return out_dir


def _html(name: str, sections: list[tuple[str, str]]) -> str:
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(name)}</title><style>"
             "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em}</style></head><body>",
             f"<h1>EfficientLLaVA search report: {html.escape(name)}</h1>"]
    for title, body in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for block in body.split("\n\n"):
            lines = block.splitlines()
            if lines and lines[0].startswith("|"):
                rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if not line.startswith("|--")]
                parts.append("<table>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                                                 for r in rows) + "</table>")
            elif block.startswith("!["):
                src = block[block.index("(") + 1:block.rindex(")")]
                parts.append(f"<img src='{html.escape(src)}' style='max-width:100%'>")
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
