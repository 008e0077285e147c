"""The `hdml` subcommands: each parses nothing and computes nothing itself, it calls the module that does the
work. Their imports are inside the functions on purpose: `hdml --help`, `hdml status` and `hdml aggregate` then
start without importing torch, faiss or the plug-ins (about 2 s each on the workflow's many short jobs)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hdml.core.errors import ConfigError


def cmd_prepare(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.data.datasets import get_dataset

    out = get_dataset(args.dataset).prepare(Path(args.root), urls=args.url, md5=args.md5,
                                            archive=Path(args.archive) if args.archive else None)
    if args.val_folds:
        # here, not at the top: only this command pays for the import (start-up time)
        from hdml.data.valsplit import write_val

        write_val(Path(args.root), args.dataset, args.val_folds)
    print(out)


def cmd_cache(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.data.cache import build_cache
    from hdml.data.datasets import get_dataset

    spec = get_dataset(args.dataset)
    print(build_cache(Path(args.root), args.dataset, args.size, spec.channels, workers=args.workers))


def cmd_train(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.core.config import parse_sets
    from hdml.train.progress import record_failure
    from hdml.train.runfolder import RunFolderError
    from hdml.train.trainer import train_run

    overrides = parse_sets(args.set)
    if args.config:  # the workflow config's settings for this dataset and method, under --set's
        overrides = {**workflow_overrides(args.config, args.dataset, args.method), **overrides}
    else:
        # here, not at the top: only this command pays for the import (start-up time)
        from hdml.core.config import build_run_config
        from hdml.data.datasets import get_dataset

        try:  # a bad --set is the one line to print (and the run's failure): checked before the note
            build_run_config(get_dataset(args.dataset).defaults_for(args.method), overrides, args.method)
        except ConfigError as exc:
            record_failure(Path(args.out), {"dataset": args.dataset, "method": args.method, "seed": args.seed}, exc)
            raise
        note = next(filter(None, (unused_workflow_settings(path, args.dataset, args.method, overrides)
                                  for path in DEMO_CONFIGS)), None)
        if note:
            print(f"hdml train: note: {note}", file=sys.stderr)
    if args.tuned:  # the tuned settings win over the config's for the keys the search varied
        # here, not at the top: only this command pays for the import (start-up time)
        from hdml.workflow.tune import read_best

        overrides.update(read_best(args.tuned, args.dataset, args.method))
    try:
        result = train_run(root=args.root, dataset=args.dataset, method=args.method, seed=args.seed,
                           out=args.out, overrides=overrides)
    except RunFolderError:  # the folder is another process's or unwritable: its record is not ours
        raise
    except BaseException as exc:
        record_failure(Path(args.out), {"dataset": args.dataset, "method": args.method, "seed": args.seed}, exc)
        raise
    print(json.dumps(result["metrics"], indent=2))


# what `hdml train` run by hand beside the workflow is compared with: the demo's config, then the digits one
DEMO_CONFIGS = (Path("config/config.yaml"), Path("config/digits.yaml"))


def workflow_overrides(path: str | Path, dataset: str, method: str) -> dict:
    """A workflow config's run-config overrides for one dataset and method (its `train`, then
    `per_method`), as the workflow passes them to its runs (variants: add their `set` by --set)."""
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.workflow.plan import method_overrides, read_workflow_configs

    config = read_workflow_configs([str(path)])
    if dataset not in config.get("datasets", {}):
        raise ConfigError(f"{path}: no dataset {dataset!r} under datasets (it has "
                          f"{', '.join(config.get('datasets', {})) or 'none'})")
    return method_overrides(config, dataset, method)


def dotted(overrides: dict, prefix: str = "") -> dict:
    """Nested or dotted overrides as one flat mapping of dotted keys."""
    out = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            out |= dotted(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def unused_workflow_settings(path: Path, dataset: str, method: str, overrides: dict) -> str | None:
    """What the workflow config at `path` sets for this dataset and method that the command does
    not (by hand, `hdml train` starts from the built-in defaults, not from the config), in words;
    None when nothing, or when there is no such config or dataset (or the method is unknown: its
    own error comes first)."""
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.core.registry import method_names

    if method not in method_names():
        return None
    try:
        wanted = dotted(workflow_overrides(path, dataset, method))
    except (ConfigError, OSError):
        return None
    missing = {k: v for k, v in wanted.items() if k not in dotted(overrides)}
    if not missing:
        return None
    listed = ", ".join(f"{k}={v}" for k, v in missing.items())
    return (f"{path} sets {listed} for {dataset}/{method}; this run keeps the built-in defaults for them. "
            f"Pass --config {path} to train as the workflow does.")


def cmd_tune_trial(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.core.config import parse_sets
    from hdml.workflow.tune import Spec, run_trial

    spec = Spec(args.dataset, args.method, args.metric, args.seed, args.startup_trials, args.folds)
    record = run_trial(args.study, spec, args.index, root=args.root, overrides=parse_sets(args.set), fold=args.fold)
    print(json.dumps(record, indent=2))


def cmd_tune_best(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    import yaml

    from hdml.workflow.tune import write_best

    print(yaml.safe_dump(write_best(args.study, args.trials, args.out), sort_keys=False), end="")


def cmd_ensemble(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.eval.ensemble import ensemble_run

    print(json.dumps(ensemble_run(args.parts, args.out)["metrics"], indent=2))


def cmd_config(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    import yaml

    from hdml.core.config import build_run_config, describe_keys, parse_sets, rules_for
    from hdml.data.datasets import get_dataset

    spec = get_dataset(args.dataset) if args.dataset else None
    if args.method and not spec:
        raise ValueError("--method needs --dataset (defaults depend on both)")
    defaults = (spec.defaults_for(args.method) if args.method else spec.run_defaults) if spec else {}
    cfg = build_run_config(defaults, parse_sets(args.set), args.method)
    if not args.list:
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return
    rows = [(key, json.dumps(value), allowed) for key, value, allowed in describe_keys(cfg, rules_for(args.method))]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    print(f"{'key':<{width[0]}}  {'default':<{width[1]}}  allowed")
    for key, value, allowed in rows:
        print(f"{key:<{width[0]}}  {value:<{width[1]}}  {allowed}")


def cmd_status(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.workflow.costs import project
    from hdml.workflow.status import grid_status, planned, render

    config, runs = planned(args.configfile)
    results = Path(args.results or config["results_dir"])
    print(render(grid_status(results, runs), verbose=args.all, projected=project(config, runs).run_seconds))


def cmd_summary(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.workflow.status import grid_status, planned, summary

    config, runs = planned(args.configfile)
    results = Path(config["results_dir"])
    print(summary(grid_status(results, runs), results / "metrics.csv", Path(config["report_dir"]) / "report.html"))


def cmd_evaluate(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.eval.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run, recompute=args.recompute), indent=2))


def cmd_metrics(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    import numpy as np

    from hdml.eval.metrics import evaluate

    if (args.gallery_embeddings is None) != (args.gallery_labels is None):
        raise ValueError("--gallery-embeddings and --gallery-labels go together")
    if args.embeddings.endswith(".npz"):  # a run's embeddings.npz: labels (and any gallery) inside
        # here, not at the top: only this command pays for the import (start-up time)
        from hdml.eval.evaluate import load_embeddings

        if args.labels or args.gallery_embeddings:
            raise ValueError(f"{args.embeddings}: an .npz holds its labels and gallery; drop --labels and --gallery-*")
        files = [args.embeddings]
        saved = load_embeddings(Path(args.embeddings))
        arrays = [saved.query, saved.labels] + ([saved.gallery, saved.gallery_labels] if saved.gallery is not None
                                                else [])
    else:
        if not args.labels:
            raise ValueError(f"{args.embeddings}: --labels is needed with a .npy of embeddings")
        files = [args.embeddings, args.labels] + ([args.gallery_embeddings, args.gallery_labels]
                                                  if args.gallery_embeddings else [])
        arrays = [np.load(f, allow_pickle=False) for f in files]
    gallery = dict(zip(("gallery", "gallery_labels"), arrays[2:], strict=True)) if len(arrays) > 2 else {}
    print("hdml metrics: " + ("L2-normalising the embeddings (the paper's protocol; --no-normalise scores them as "
                              "given)" if args.normalise else "scoring the embeddings as given (not normalised)"),
          file=sys.stderr)
    try:
        result = evaluate(arrays[0], arrays[1], args.ks, seed=args.seed, kmeans_algorithm=args.kmeans,
                          normalise=args.normalise, **gallery)
    except ValueError as exc:
        raise ValueError(f"{', '.join(files)}: {exc}") from exc
    print(json.dumps(result, indent=2))


def cmd_aggregate(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.eval.aggregate import aggregate

    aggregate([Path(r) for r in args.runs], Path(args.out), Path(args.curves), Path(args.runs_table),
              benchmarks=Path(args.benchmarks) if args.benchmarks else None,
              out_costs=Path(args.costs))


def cmd_tsne(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.eval.tsne import tsne_map, write_map

    write_map(Path(args.out), tsne_map(Path(args.embeddings)))
    print(args.out)


def cmd_report(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.report import render

    print(render(Path(args.metrics), Path(args.out), curves_csv=args.curves, runs_csv=args.runs,
                 costs_csv=args.costs, tsne=[Path(t) for t in args.tsne],
                 losses=[Path(p) for p in args.losses], tuning=[Path(p) for p in args.tuning]))


def cmd_check_config(args: argparse.Namespace) -> None:
    # here, not at the top: only this command pays for the import (start-up time)
    from hdml.workflow.plan import (
        load_schema,
        read_workflow_configs,
        tune_settings,
        tune_studies,
        validate_workflow_config,
    )

    config = read_workflow_configs(args.configfile)
    schema = load_schema(Path(args.schema)) if args.schema else None
    runs = validate_workflow_config(config, schema, source=", ".join(args.configfile))
    studies, tune = tune_studies(config), tune_settings(config)
    if not args.no_costs:
        # here, not at the top: only this command pays for the import (start-up time)
        from hdml.workflow.costs import describe, project

        print("\n".join(describe(project(config, runs))))
    trials = f"{len(studies)} tuning studies x {tune['trials']} trials" if studies else ""
    if studies and tune["folds"] > 1:
        trials += f" x {tune['folds']} folds = {len(studies) * tune['trials'] * tune['folds']} trial jobs"
    parts = sum(1 for r in runs if r.part_of)
    folded = f"{parts} fold models (trained as runs) joined into {sum(1 for r in runs if r.folds)} of the runs; " \
        if parts else ""
    print(f"{trials}{'; ' if trials else ''}{folded}{len(runs) - parts} runs OK")


