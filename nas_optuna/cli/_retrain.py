"""``nas-optuna retrain``: the selected architectures of a search, trained for longer.

The results go to a linked study (default ``<name>-retrain``) whose trials point back at
the search's (``source_study``, ``source_trial``, ``selection``); see
:mod:`nas_optuna.retrain` for the schedule and the contract.
"""

from __future__ import annotations

import argparse
import time

NAME = "retrain"
HELP = "train selected architectures of a search for longer, into a linked study"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nas_optuna.retrain import DEFAULT_EPOCHS
    from nas_optuna.training.trainer import FINAL_LR

    parser.add_argument("--storage", required=True, help="Optuna storage URL of the search")
    parser.add_argument("--study-name", required=True, help="the search study")
    parser.add_argument("--select", required=True, metavar="SPEC",
                        help="top:K and/or random:K, comma-separated (e.g. top:5,random:5)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"epochs of the longer training (default {DEFAULT_EPOCHS})")
    parser.add_argument("--retrain-study", metavar="NAME",
                        help="the linked study (default: <study-name>-retrain)")
    parser.add_argument("--seed", type=int, help="seed of the random pick and of training "
                        "(default: the search's)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the search's)")
    parser.add_argument("--lr", type=float, default=FINAL_LR,
                        help=f"initial SGD learning rate, 'poly' decay (default {FINAL_LR})")
    parser.add_argument("--weights-dir", metavar="DIR",
                        help="also save each retrained state_dict here (for export --weights)")
    parser.add_argument("--quiet", action="store_true", help="no per-architecture lines")


def run(args: argparse.Namespace) -> int:
    import optuna

    from nas_optuna.retrain import Selected, parse_selection, retrain_study

    started = time.monotonic()

    def on_start(selected: list[Selected], skipped: list[int]) -> None:
        parts = {part: sum(1 for s in selected if s.part == part) for part in ("top", "random")}
        asked = parse_selection(args.select)
        fewer = (f" (asked for {asked.spec}; the study has fewer COMPLETE trials)"
                 if (asked.top, asked.random) != (parts["top"], parts["random"]) else "")
        print(f"retraining study {args.study_name!r}: {parts['top']} top and "
              f"{parts['random']} random architectures{fewer}, {len(skipped)} already "
              f"retrained; {args.epochs} epochs each", flush=True)

    def on_trial(trial: optuna.trial.FrozenTrial) -> None:
        if args.quiet:
            return
        attrs = trial.user_attrs
        outcome = (f"retrained {trial.value:.4f}" if trial.value is not None
                   else f"reason: {attrs.get('fail_reason')}")
        print(f"[{time.monotonic() - started:7.1f}s] source trial {attrs['source_trial']:3d} "
              f"({attrs['selection']:6s}) search {attrs['search_reward']:.4f} -> {outcome}  "
              f"{trial.state.name}", flush=True)

    done = retrain_study(
        args.storage, args.study_name, args.select, epochs=args.epochs,
        retrain_study_name=args.retrain_study, seed=args.seed, device=args.device, lr=args.lr,
        weights_dir=args.weights_dir, on_start=on_start, on_trial=on_trial,
    )
    complete = [t for t in done.study.get_trials(deepcopy=False)
                if t.state == optuna.trial.TrialState.COMPLETE]
    failed = sum(1 for t in done.trials if t.state == optuna.trial.TrialState.FAIL)
    print(f"linked study {done.study.study_name!r}: {len(done.trials)} added "
          f"({failed} failed), {len(done.skipped)} skipped, {len(complete)} COMPLETE in all")
    return 0
