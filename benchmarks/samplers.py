"""Which sampler, how many trials: samplers compared on the template surrogate (issue 18).

The surrogate (``benchmarks/data/surrogate_template.npz``: fitted by ``nas-optuna
surrogate fit`` on the 300 trained random architectures of ``benchmarks/surrogate_data.py``,
seed-noise std 0.0126 from ``benchmarks/data/fidelity_runs.jsonl``) stands in for training:
each trial is one :class:`~nas_optuna.surrogate.SurrogateObjective` call, the prediction
plus noise of the measured seed std (the noise of trial ``n`` in seed ``s`` is the same
draw for every sampler). Every sampler runs ``--seeds`` x ``--trials`` trials in an
in-memory study.

Reported per sampler (medians over seeds unless said):

* ``best-so-far``: the best *noise-free* prediction among the first t trials (the best
  architecture found so far), and the mean observed reward of the last 100 trials;
* ``trials_to_random_best``: the first trial whose best-so-far reaches random search's
  final best (the median over random's seeds); ``null`` when a seed never does (counted as
  ``trials + 1`` in the median);
* ``final_regret``: ``f* - predicted(incumbent)``, the incumbent being the trial with the
  best *observed* value after the last trial (what a user would pick). ``f*`` is the best
  prediction found by any run of any sampler, improved by a greedy one-parameter-at-a-time
  ascent from the 20 best distinct architectures until no single change helps (it is the
  best the benchmark could find, not a proven optimum);
* two-sided Mann-Whitney U tests of the per-seed final regrets, each sampler against random
  and PPO against TPE.

Resumable: one line per (sampler, seed) run appended to
``benchmarks/data/sampler_runs.jsonl``, with the surrogate file's digest; ``run`` skips what
is there for the same surrogate, and ``report`` reads only the given surrogate's runs.

Usage::

    python benchmarks/samplers.py run [--seeds 10] [--trials 500] [--samplers ...]
    python benchmarks/samplers.py report --markdown docs/benchmarks_samplers.md \\
        --json docs/benchmarks_samplers.json --figure docs/img/samplers.html
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
for folder in (_HERE, ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import optuna  # noqa: E402
from _docs import write_between_markers  # noqa: E402
from _machine import cpu_model  # noqa: E402

from nas_optuna._optuna import experimental_ok  # noqa: E402
from nas_optuna.study import build_sampler  # noqa: E402
from nas_optuna.surrogate import SurrogateObjective, load_surrogate  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
DEFAULT_MODEL = DATA / "surrogate_template.npz"
DEFAULT_RESULTS = DATA / "sampler_runs.jsonl"
DEFAULT_REAL = ROOT / "docs" / "benchmarks_real_search.json"
#: The distinct architectures of highest prediction each run keeps (the start points of
#: the search for ``f*``); every trial's params would make the results file ~40 MB.
TOP_PARAMS = 10

#: Benchmark name -> (registered sampler, its options), built by ``build_sampler`` as a
#: config's ``[sampler]`` table would be.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    # Optuna 5's default TPE is multivariate (with the constant liar); on the template
    # space, whose parameters are all always present, ``group=True`` finds one group and
    # ran trial for trial identical to it (seeds 0 and 1 checked), so the contrast kept is
    # the classic independent TPE (Optuna < 5's default).
    "tpe": ("tpe", {}),
    "tpe_univariate": ("tpe", {"multivariate": False}),
    "nsga2": ("nsga2", {}),
    "gp": ("gp", {}),
    "ppo": ("ppo", {}),
    # The papers' update: the whole buffer of 100 trials at learning rate 1e-4.
    "ppo_papers": ("ppo", {"batch_size": None, "learning_rate": 1e-4}),
}


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_one(surrogate: Any, sampler: str, seed: int, trials: int) -> dict[str, Any]:
    """One sampler run on the surrogate: every trial's observed and predicted reward."""
    name, options = SAMPLERS[sampler]
    with experimental_ok():
        study = optuna.create_study(direction="maximize",
                                    sampler=build_sampler(name, options, seed))
    started = time.perf_counter()
    study.optimize(SurrogateObjective(surrogate, seed=seed), n_trials=trials)
    done = study.get_trials(deepcopy=False)
    top: dict[str, list[Any]] = {}
    for t in sorted(done, key=lambda t: -t.user_attrs["predicted"]):
        top.setdefault(json.dumps(t.params, sort_keys=True),
                       [round(t.user_attrs["predicted"], 6), t.params])
        if len(top) == TOP_PARAMS:
            break
    return {"sampler": sampler, "seed": seed, "trials": trials, "surrogate": surrogate.digest,
            "values": [round(t.value, 6) for t in done],
            "predicted": [round(t.user_attrs["predicted"], 6) for t in done],
            "top": list(top.values()),
            "seconds": round(time.perf_counter() - started, 2), "machine": cpu_model()}


def run(model: Path, samplers: Sequence[str], seeds: int, trials: int, results: Path,
        trial_limits: Mapping[str, int] | None = None) -> None:
    """Runs every missing (sampler, seed); appends each run as one line."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    surrogate = load_surrogate(model)
    done = {(r["sampler"], r["seed"], r["trials"]) for r in _read(results)
            if r.get("surrogate") == surrogate.digest}
    for seed in range(seeds):
        for sampler in samplers:
            n = (trial_limits or {}).get(sampler, trials)
            if (sampler, seed, n) in done:
                continue
            record = run_one(surrogate, sampler, seed, n)
            with results.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
            print(f"{sampler:16s} seed {seed}: best predicted {max(record['predicted']):.4f} "
                  f"({record['seconds']:.0f} s)", flush=True)


# --- the best architecture the benchmark can find -----------------------------------------
def best_architecture(surrogate: Any, records: Sequence[Mapping[str, Any]],
                      starts: int = 20) -> tuple[float, dict[str, Any]]:
    """``f*`` and its params: the best prediction of any run, then greedy ascent."""
    from search_spaces import get_space

    options = {k: v for k, v in surrogate.space.items() if k != "name"}
    space = get_space(surrogate.space_name, **options)
    pool: dict[str, tuple[float, dict[str, Any]]] = {}
    for record in records:
        for value, params in record["top"]:
            pool[json.dumps(params, sort_keys=True)] = (value, params)
    ranked = sorted(pool.values(), key=lambda item: -item[0])[:starts]
    choices = _choices(surrogate)
    best_value, best_params = ranked[0]
    for value, params in ranked:
        improved = True
        while improved:
            improved = False
            neighbours = []
            for name, values in choices.items():
                for option in values:
                    if name in params and option != params[name]:
                        candidate = {**params, name: option}
                        try:
                            candidate = space.to_params(space.from_params(candidate))
                        except Exception:  # noqa: BLE001 - not an architecture of the space
                            continue
                        neighbours.append(candidate)
            if not neighbours:
                break
            predicted = surrogate.predict(neighbours)
            top = int(np.argmax(predicted))
            if predicted[top] > value + 1e-12:
                value, params, improved = float(predicted[top]), neighbours[top], True
        if value > best_value:
            best_value, best_params = value, params
    return float(best_value), best_params


def _choices(surrogate: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for p in surrogate.encoding.params:
        if p.kind == "categorical":
            out[p.name] = list(p.choices)
    return out


# --- statistics ---------------------------------------------------------------------------
def regret_at(record: Mapping[str, Any], f_star: float, trials: int) -> float:
    """``f*`` minus the prediction of the best *observed* of the first ``trials`` trials."""
    values = record["values"][:trials]
    return f_star - float(record["predicted"][int(np.argmax(values))])


def summarise(records: Sequence[Mapping[str, Any]], f_star: float) -> dict[str, Any]:
    from scipy.stats import mannwhitneyu

    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by.setdefault(r["sampler"], []).append(r)
    random_best = float(np.median([max(r["predicted"]) for r in by.get("random", [])]))
    rows = []
    regrets: dict[str, list[float]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for name in [s for s in SAMPLERS if s in by]:
        runs = sorted(by[name], key=lambda r: r["seed"])
        reach, last, regret = [], [], []
        best_curves, last_curves = [], []
        for r in runs:
            predicted, values = np.asarray(r["predicted"]), np.asarray(r["values"])
            best = np.maximum.accumulate(predicted)
            hit = np.nonzero(best >= random_best)[0]
            reach.append(int(hit[0]) + 1 if len(hit) else None)
            last.append(float(values[-100:].mean()))
            regret.append(regret_at(r, f_star, len(values)))
            best_curves.append(best)
            window = np.convolve(values, np.ones(100) / 100, mode="valid")
            last_curves.append(window)
        n = runs[0]["trials"]
        counted = [x if x is not None else n + 1 for x in reach]
        regrets[name] = regret
        length = min(len(c) for c in best_curves)
        curves[name] = {"best_so_far": np.median([c[:length] for c in best_curves], 0).tolist(),
                        "mean_last100": np.median([c for c in last_curves
                                                   if len(c) == len(last_curves[0])],
                                                  0).tolist()}
        rows.append({"name": name, "seeds": len(runs), "trials": n,
                     "trials_to_random_best": float(np.median(counted)),
                     "reached_random_best": sum(x is not None for x in reach),
                     "last100_mean": float(np.mean(last)),
                     "last100_std": float(np.std(last, ddof=1)) if len(last) > 1 else 0.0,
                     "final_regret": float(np.median(regret)),
                     "regret_at_100": (float(np.median([regret_at(r, f_star, 100)
                                                        for r in runs]))
                                       if n >= 100 else None),
                     "final_regret_iqr": [float(q) for q in np.percentile(regret, [25, 75])],
                     "best_predicted": float(np.median([max(r["predicted"]) for r in runs])),
                     "seconds_per_run": float(np.median([r["seconds"] for r in runs]))})
    tests = []
    pairs = [(name, "random") for name in regrets if name != "random"]
    if "ppo" in regrets and "tpe" in regrets:
        pairs.append(("ppo", "tpe"))
    for a, b in pairs:
        if b in regrets and len(regrets[a]) >= 3 and len(regrets[b]) >= 3:
            # Regrets compared at the shorter run's length (GP runs fewer trials).
            length = min(by[a][0]["trials"], by[b][0]["trials"])
            left = [regret_at(r, f_star, length) for r in by[a]]
            right = [regret_at(r, f_star, length) for r in by[b]]
            test = mannwhitneyu(left, right, alternative="two-sided")
            tests.append({"a": a, "b": b, "metric": f"regret_at_{length}", "trials": length,
                          "u": float(test.statistic), "p_value": float(test.pvalue),
                          "n_a": len(left), "n_b": len(right)})
    return {"f_star": f_star, "random_best": random_best, "samplers": rows, "tests": tests,
            "curves": curves}


def markdown(summary: Mapping[str, Any], surrogate: Mapping[str, Any], command: str,
             machine: str) -> str:
    lines = [f"Machine: {machine}. Command: `{command}`.", "",
             f"Surrogate: {surrogate['model']}, 5-fold CV Spearman {surrogate['cv_spearman']:.3f}"
             f" (R^2 {surrogate['cv_r2']:.3f}); seed-noise ceiling "
             f"{surrogate['noise_ceiling']:.3f}.",
             f"f* (best prediction found, then greedy ascent) = {summary['f_star']:.4f}; "
             f"random search's median {summary['samplers'][0]['trials']}-trial best = "
             f"{summary['random_best']:.4f}.", "",
             "| sampler | seeds x trials | trials to random's best (median) | seeds reaching "
             "it | mean of last 100 (± std over seeds) | regret at 100 trials (median) | "
             "final regret (median, IQR) | s per run |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["samplers"]:
        at_100 = "-" if r["regret_at_100"] is None else f"{r['regret_at_100']:.4f}"
        reach = (f"{r['trials_to_random_best']:.0f}" if r["trials"] == summary["samplers"][0][
            "trials"] else f"{r['trials_to_random_best']:.0f} (of {r['trials']})")
        lines.append(
            f"| {r['name']} | {r['seeds']} x {r['trials']} | {reach} | "
            f"{r['reached_random_best']}/{r['seeds']} | {r['last100_mean']:.4f} ± "
            f"{r['last100_std']:.4f} | {at_100} | {r['final_regret']:.4f} "
            f"({r['final_regret_iqr'][0]:.4f}-{r['final_regret_iqr'][1]:.4f}) | "
            f"{r['seconds_per_run']:.0f} |")
    lines += ["", "| regret: a vs b | at trials | U | two-sided p | seeds |",
              "|---|---|---|---|---|"]
    for t in summary["tests"]:
        lines.append(f"| {t['a']} vs {t['b']} | {t['trials']} | {t['u']:.1f} | "
                     f"{t['p_value']:.4f} | {t['n_a']} vs {t['n_b']} |")
    return "\n".join(lines) + "\n"


def real_summary(real: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """The real confirmation (``benchmarks/real_search.py report --json``) in brief.

    ``p_value`` and ``effect_size``: the searching samplers' top architectures pooled
    against the random 5 (one-sided Mann-Whitney, rank-biserial); ``top5_long``: each
    sampler's top-5 mean reward after reference training; ``random5_long``: the random 5's.
    """
    def mean_long(group: str) -> float | None:
        longs = [m["long"] for m in real["groups"].get(group, []) if m["long"] is not None]
        return float(np.mean(longs)) if longs else None

    pooled = next((t for name, t in real["tests"].items()
                   if name.startswith(f"searched_s{seed}")), None)
    samplers = sorted(name.split("_")[1] for name in real["studies"])
    return {
        "p_value": None if pooled is None else pooled["p_value"],
        "effect_size": None if pooled is None else pooled["effect_size"],
        "top5_long": {name: mean_long(f"real_{name}_s{seed}:top") for name in samplers},
        "random5_long": mean_long(f"real_random_s{seed}:random"),
        "best_search_reward": {name: real["studies"][f"real_{name}_s{seed}"]["best"]
                               for name in samplers},
        "trials": min(real["studies"][f"real_{name}_s{seed}"]["trials"] for name in samplers),
        "tests": real["tests"], "epochs": real["epochs"],
    }


def best_observed_at(records: Sequence[Mapping[str, Any]], trials: int) -> dict[str, float]:
    """Per sampler, the median over seeds of the best observed (noisy) value among the
    first ``trials`` trials: what a search of the real search's length would report."""
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(r["sampler"], []).append(max(r["values"][:trials]))
    return {name: float(np.median(v)) for name, v in by.items()}


def _real_markdown(real: Mapping[str, Any] | None, summary: Mapping[str, Any]) -> str:
    if real is None:
        return ""
    predicted = {r["name"]: r["best_predicted"] for r in summary["samplers"]}
    names = [n for n in real["top5_long"] if n in predicted]
    order = lambda values: " > ".join(sorted(names, key=lambda n: -(values[n] or 0.0)))  # noqa: E731
    lines = ["", f"Real training (seed 0, reference {real['epochs']} epochs): searched top "
             f"(pooled) vs random 5: one-sided p = {real['p_value']:.3f}, rank-biserial "
             f"effect {real['effect_size']:+.2f}.", "",
             f"| sampler | surrogate: median best prediction | surrogate: median best observed "
             f"in {real['trials']} trials | real: best search reward in {real['trials']} trials | "
             "real: top-5 mean after reference training |", "|---|---|---|---|---|"]
    at_length = real.get("surrogate_best_observed_at_real_length", {})
    for name in names:
        lines.append(f"| {name} | {predicted[name]:.4f} | {at_length.get(name, float('nan')):.4f}"
                     f" | {real['best_search_reward'][name]:.4f} | "
                     f"{real['top5_long'][name]:.4f} |")
    lines += ["", f"random 5 after reference training: {real['random5_long']:.4f}.", "",
              f"Order on the surrogate: {order(predicted)} (in {real['trials']} trials: "
              f"{order(at_length) if at_length else '-'}); by real best search reward: "
              f"{order(real['best_search_reward'])}; by top-5 after reference training: "
              f"{order(real['top5_long'])}."]
    return "\n".join(lines) + "\n"


def figure(summary: Mapping[str, Any]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "best noise-free prediction so far (median over seeds)",
        "mean observed reward of the last 100 trials (median over seeds)"))
    for name, curve in summary["curves"].items():
        best = curve["best_so_far"]
        fig.add_trace(go.Scatter(x=list(range(1, len(best) + 1)), y=best, name=name,
                                 legendgroup=name), row=1, col=1)
        window = curve["mean_last100"]
        fig.add_trace(go.Scatter(x=list(range(100, 100 + len(window))), y=window, name=name,
                                 legendgroup=name, showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="trial")
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser("run")
    run_cmd.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    run_cmd.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    run_cmd.add_argument("--seeds", type=int, default=10)
    run_cmd.add_argument("--trials", type=int, default=500)
    run_cmd.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    run_cmd.add_argument("--limit", nargs="+", default=[], metavar="SAMPLER=TRIALS",
                         help="fewer trials for a slow sampler, e.g. gp=200")
    report = commands.add_parser("report")
    report.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    report.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    report.add_argument("--markdown", type=Path)
    report.add_argument("--json", type=Path)
    report.add_argument("--figure", type=Path)
    report.add_argument("--real", type=Path, default=DEFAULT_REAL,
                        help="JSON of benchmarks/real_search.py report (the real confirmation)")
    args = parser.parse_args(argv)
    if args.command == "run":
        limits = {k: int(v) for k, v in (item.split("=", 1) for item in args.limit)}
        run(args.model, args.samplers, args.seeds, args.trials, args.results, limits)
        return 0
    surrogate = load_surrogate(args.model)
    everything = _read(args.results)
    records = [r for r in everything if r.get("surrogate") == surrogate.digest]
    if not records:
        print(f"samplers: no runs of {args.model} in {args.results}", file=sys.stderr)
        return 1
    if len(records) < len(everything):
        print(f"samplers: {len(everything) - len(records)} runs of another surrogate "
              "ignored", file=sys.stderr)
    f_star, _ = best_architecture(surrogate, records)
    summary = summarise(records, f_star)
    info = {"model": surrogate.model, "cv_spearman": surrogate.cv.cv_spearman,
            "cv_r2": surrogate.cv.cv_r2, "noise_ceiling": surrogate.info.get("noise_ceiling"),
            "noise_std": surrogate.noise_std, "trials": surrogate.info.get("trials")}
    command = "python benchmarks/samplers.py " + " ".join(argv or sys.argv[1:])
    real = real_summary(json.loads(args.real.read_text())) if args.real.is_file() else None
    if real is not None:
        real["surrogate_best_observed_at_real_length"] = best_observed_at(
            records, real["trials"])
    text = markdown(summary, info, command, cpu_model()) + _real_markdown(real, summary)
    print(text)
    if args.markdown:
        write_between_markers(args.markdown, text, "samplers")
    if args.json:
        payload = {"machine": cpu_model(), "surrogate": info, "real": real,
                   **{k: v for k, v in summary.items() if k != "curves"}}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    if args.figure:
        figure(summary).write_html(args.figure, include_plotlyjs="cdn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
