"""``nas-optuna surrogate fit | predict | search``: surrogate benchmarks from a study.

* ``fit`` encodes a study's COMPLETE trials, compares the candidate models by K-fold
  cross-validation, prints each one's Spearman (95% CI) and R^2 against the seed-noise
  ceiling, and saves the best (:mod:`nas_optuna.surrogate`);
* ``predict`` prints, for each COMPLETE trial of a study, its number, stored reward and the
  surrogate's prediction (``--json``: a list of ``{"number", "value", "predicted"}``);
* ``search`` runs (or resumes, to ``--n-trials`` in all) a study whose objective is the
  surrogate, with any registered sampler; it is a plain Optuna study that ``nas-optuna
  report``, the ``optuna`` CLI and optuna-dashboard read.

Example:
    $ nas-optuna surrogate fit --storage sqlite:///nas-optuna.db --study-name quickstart \\
          -o quickstart.surrogate.npz --noise-std 0.0126
    $ nas-optuna surrogate search --model quickstart.surrogate.npz \\
          --storage sqlite:///surrogate.db --study-name tpe --sampler tpe --n-trials 500
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from nas_optuna.cli._common import Parser, load_study
from nas_optuna.exceptions import ConfigError

if TYPE_CHECKING:
    import optuna

    from nas_optuna.surrogate import Surrogate

NAME = "surrogate"
HELP = "fit a surrogate of a study's reward, check it, and search on it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="surrogate_command", required=True,
                                     parser_class=Parser)
    fit = commands.add_parser("fit", help="fit and save a surrogate of a study's reward")
    fit.add_argument("--storage", required=True, help="Optuna storage URL")
    fit.add_argument("--study-name", required=True, help="the study of trained architectures")
    fit.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL",
                     help="surrogate file to write (.npz; replaced atomically)")
    fit.add_argument("--noise-std", type=float, metavar="STD",
                     help="the reward's seed-noise std (default: from repeated params, if any)")
    fit.add_argument("--models", nargs="+", metavar="NAME",
                     help="candidate models (default: all)")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    fit.add_argument("--no-derived", action="store_true",
                     help="params only, without the space's derived architecture features")
    fit.add_argument("--seed", type=int, default=0, help="seed of folds and models")
    fit.add_argument("--json", action="store_true", help="print the scores as JSON")

    predict = commands.add_parser("predict", help="the surrogate against a study's rewards")
    predict.add_argument("--model", required=True, type=Path, help="surrogate file")
    predict.add_argument("--storage", required=True, help="Optuna storage URL")
    predict.add_argument("--study-name", required=True, help="the study to predict")
    predict.add_argument("--json", action="store_true", help="print a JSON list")

    search = commands.add_parser("search", help="run a study on the surrogate")
    search.add_argument("--model", required=True, type=Path, help="surrogate file")
    search.add_argument("--storage", required=True, help="Optuna storage URL")
    search.add_argument("--study-name", required=True, help="the surrogate study")
    search.add_argument("--sampler", default="tpe", help="registered sampler (default tpe)")
    search.add_argument("--n-trials", type=int, default=100,
                        help="the study's total number of trials (default 100)")
    search.add_argument("--seed", type=int, default=0, help="seed of the sampler and noise")
    search.add_argument("--no-noise", action="store_true",
                        help="return the noise-free prediction")
    search.add_argument("--quiet", action="store_true", help="no per-trial lines")


def run(args: argparse.Namespace) -> int:
    return {"fit": _fit, "predict": _predict, "search": _search}[args.surrogate_command](args)


def _fit(args: argparse.Namespace) -> int:
    from nas_optuna.surrogate import MODELS, fit_surrogate, save_surrogate

    if args.folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {args.folds}")
    if args.noise_std is not None and not args.noise_std >= 0:
        raise ConfigError(f"--noise-std must be >= 0, got {args.noise_std}")
    for name in args.models or ():
        MODELS.get(name)  # an unknown name: one line listing the known ones
    if not args.output.parent.is_dir():
        raise ConfigError(f"output folder {str(args.output.parent)!r} does not exist")
    study = load_study(args.storage, args.study_name)
    surrogate = fit_surrogate(study, noise_std=args.noise_std, models=args.models,
                              folds=args.folds, seed=args.seed, derived=not args.no_derived)
    save_surrogate(surrogate, args.output)
    ceiling = surrogate.info.get("noise_ceiling")
    if args.json:
        print(json.dumps({"model": surrogate.model, "output": str(args.output),
                          "trials": surrogate.info["trials"],
                          "noise_std": surrogate.noise_std, "noise_ceiling": ceiling,
                          "features": len(surrogate.columns),
                          "derived": list(surrogate.derived),
                          "scores": [s.__dict__ for s in surrogate.scores]}, indent=1))
        return 0
    print(f"{surrogate.info['trials']} trials, {len(surrogate.encoding.columns)} encoded params"
          f" + {len(surrogate.derived)} derived features, "
          f"{args.folds}-fold cross-validation:")
    for s in surrogate.scores:
        print(f"  {s.model:18s} Spearman {s.cv_spearman:6.3f} "
              f"({s.cv_spearman_low:.3f} to {s.cv_spearman_high:.3f})  R^2 {s.cv_r2:6.3f}")
    noise = ("unknown (give --noise-std)" if surrogate.noise_std is None
             else f"{surrogate.noise_std:.4g}, ceiling Spearman {ceiling:.3f}")
    print(f"seed noise std {noise}")
    print(f"saved {surrogate.model} -> {args.output}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import optuna

    from nas_optuna.surrogate import load_surrogate

    surrogate = load_surrogate(args.model)
    study = load_study(args.storage, args.study_name)
    _check_space(surrogate, study)
    trials = [t for t in study.get_trials(deepcopy=False,
                                          states=(optuna.trial.TrialState.COMPLETE,))
              if t.params]
    names = study.metric_names or []
    index = names.index(surrogate.metric["name"]) if surrogate.metric["name"] in names else 0
    predicted = surrogate.predict([t.params for t in trials]) if trials else []
    rows = [{"number": t.number, "value": t.values[index], "predicted": float(p)}
            for t, p in zip(trials, predicted)]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'number':>6s}  {'value':>8s}  {'predicted':>9s}")
    for row in rows:
        print(f"{row['number']:6d}  {row['value']:8.4f}  {row['predicted']:9.4f}")
    if len(rows) >= 3:
        from scipy.stats import spearmanr

        rho = spearmanr([r["value"] for r in rows], [r["predicted"] for r in rows]).statistic
        print(f"{len(rows)} COMPLETE trials, Spearman {rho:.3f}")
    return 0


def _search(args: argparse.Namespace) -> int:
    import optuna

    from nas_optuna.storage import open_storage
    from nas_optuna.study import build_sampler
    from nas_optuna.surrogate import SurrogateObjective, load_surrogate, prepare_surrogate_study

    if args.n_trials < 1:
        raise ConfigError(f"--n-trials must be >= 1, got {args.n_trials}")
    surrogate = load_surrogate(args.model)
    sampler = build_sampler(args.sampler, {}, args.seed)
    try:
        study = optuna.create_study(storage=open_storage(args.storage),
                                    study_name=args.study_name, sampler=sampler,
                                    direction=surrogate.metric["direction"],
                                    load_if_exists=True)
    except ValueError as error:  # e.g. an existing study of other directions
        raise ConfigError(f"study {args.study_name!r}: {error}") from None
    if study.directions != [optuna.study.StudyDirection[surrogate.metric["direction"].upper()]]:
        raise ConfigError(f"study {args.study_name!r} has other directions than the "
                          f"surrogate's {surrogate.metric['direction']!r}")
    stored = study.user_attrs.get("surrogate")
    if stored is not None and stored.get("source_study") != surrogate.info.get("study"):
        raise ConfigError(f"study {args.study_name!r} was run on another surrogate (of study "
                          f"{stored.get('source_study')!r}); use a new --study-name")
    _check_space(surrogate, study)
    prepare_surrogate_study(study, surrogate, sampler=args.sampler,
                            model_path=str(args.model))
    remaining = args.n_trials - len(study.trials)
    if remaining <= 0:
        print(f"study {args.study_name!r} already has {len(study.trials)} trials")
        return 0

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not args.quiet:
            print(f"trial {trial.number:4d} value {trial.value:.4f} "
                  f"(predicted {trial.user_attrs.get('predicted', float('nan')):.4f}) "
                  f"best {study.best_value:.4f}", flush=True)

    objective = SurrogateObjective(surrogate, noise=not args.no_noise, seed=args.seed)
    study.optimize(objective, n_trials=remaining, callbacks=[report])
    print(f"study {args.study_name!r}: {len(study.trials)} trials, best {study.best_value:.4f} "
          f"(trial {study.best_trial.number})")
    return 0


def _check_space(surrogate: Surrogate, study: optuna.Study) -> None:
    space = study.user_attrs.get("space")
    if isinstance(space, dict) and space.get("name") not in (None, surrogate.space_name):
        raise ConfigError(f"study {study.study_name!r} searched space {space.get('name')!r}; "
                          f"the surrogate models {surrogate.space_name!r}")
