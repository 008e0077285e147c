"""The `hdml` command line: one subcommand per workflow step."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

from hdml.core.config import ConfigError
from hdml.core.registry import method_names

EXIT_USAGE = 2  # bad input: config, files, arguments
EXIT_DIVERGED = 3  # NaN/infinite losses: rerunning will not help
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGINT, rerun to resume


def cmd_prepare(args: argparse.Namespace) -> None:
    from hdml.data.datasets import get_dataset

    out = get_dataset(args.dataset).prepare(Path(args.root), urls=args.url, md5=args.md5,
                                            archive=Path(args.archive) if args.archive else None)
    if args.val_folds:
        from hdml.data.valsplit import write_val

        write_val(Path(args.root), args.dataset, args.val_folds)
    print(out)


def cmd_cache(args: argparse.Namespace) -> None:
    from hdml.data.cache import build_cache
    from hdml.data.datasets import get_dataset

    spec = get_dataset(args.dataset)
    print(build_cache(Path(args.root), args.dataset, args.size, spec.channels, workers=args.workers))


def cmd_train(args: argparse.Namespace) -> None:
    from hdml.core.config import parse_sets
    from hdml.train.progress import record_failure
    from hdml.train.runfolder import RunFolderError
    from hdml.train.trainer import train_run

    overrides = parse_sets(args.set)
    if args.config:  # the workflow config's settings for this dataset and method, under --set's
        overrides = {**workflow_overrides(args.config, args.dataset, args.method), **overrides}
    else:
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
    from hdml.core.config import parse_sets
    from hdml.workflow.tune import Spec, run_trial

    spec = Spec(args.dataset, args.method, args.metric, args.seed, args.startup_trials, args.folds)
    record = run_trial(args.study, spec, args.index, root=args.root, overrides=parse_sets(args.set), fold=args.fold)
    print(json.dumps(record, indent=2))


def cmd_tune_best(args: argparse.Namespace) -> None:
    import yaml

    from hdml.workflow.tune import write_best

    print(yaml.safe_dump(write_best(args.study, args.trials, args.out), sort_keys=False), end="")


def cmd_ensemble(args: argparse.Namespace) -> None:
    from hdml.eval.ensemble import ensemble_run

    print(json.dumps(ensemble_run(args.parts, args.out)["metrics"], indent=2))


def cmd_config(args: argparse.Namespace) -> None:
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
    from hdml.workflow.costs import project
    from hdml.workflow.status import grid_status, planned, render

    config, runs = planned(args.configfile)
    results = Path(args.results or config["results_dir"])
    print(render(grid_status(results, runs), verbose=args.all, projected=project(config, runs).run_seconds))


def cmd_summary(args: argparse.Namespace) -> None:
    from hdml.workflow.status import grid_status, planned, summary

    config, runs = planned(args.configfile)
    results = Path(config["results_dir"])
    print(summary(grid_status(results, runs), results / "metrics.csv", Path(config["report_dir"]) / "report.html"))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hdml.eval.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run, recompute=args.recompute), indent=2))


def cmd_metrics(args: argparse.Namespace) -> None:
    import numpy as np

    from hdml.eval.metrics import evaluate

    if (args.gallery_embeddings is None) != (args.gallery_labels is None):
        raise ValueError("--gallery-embeddings and --gallery-labels go together")
    if args.embeddings.endswith(".npz"):  # a run's embeddings.npz: labels (and any gallery) inside
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
    from hdml.eval.aggregate import aggregate

    aggregate([Path(r) for r in args.runs], Path(args.out), Path(args.curves), Path(args.runs_table),
              benchmarks=Path(args.benchmarks) if args.benchmarks else None,
              out_costs=Path(args.costs))


def cmd_tsne(args: argparse.Namespace) -> None:
    from hdml.eval.tsne import tsne_map, write_map

    write_map(Path(args.out), tsne_map(Path(args.embeddings)))
    print(args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from hdml.report import render

    print(render(Path(args.metrics), Path(args.out), curves_csv=args.curves, runs_csv=args.runs,
                 costs_csv=args.costs, tsne=[Path(t) for t in args.tsne],
                 losses=[Path(p) for p in args.losses], tuning=[Path(p) for p in args.tuning]))


def cmd_check_config(args: argparse.Namespace) -> None:
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
        from hdml.workflow.costs import describe, project

        print("\n".join(describe(project(config, runs))))
    trials = f"{len(studies)} tuning studies x {tune['trials']} trials" if studies else ""
    if studies and tune["folds"] > 1:
        trials += f" x {tune['folds']} folds = {len(studies) * tune['trials'] * tune['folds']} trial jobs"
    parts = sum(1 for r in runs if r.part_of)
    folded = f"{parts} fold models (trained as runs) joined into {sum(1 for r in runs if r.folds)} of the runs; " \
        if parts else ""
    print(f"{trials}{'; ' if trials else ''}{folded}{len(runs) - parts} runs OK")


class HelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a function, called only when help is shown: listing
    the methods imports torch, which commands like `hdml aggregate` do not need."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _datasets_help() -> str:
    """Every dataset and the files `--archive` takes for it (when no mirror works)."""
    from hdml.data.datasets import DATASETS, dataset_names

    lines = ["datasets:"]
    for name in dataset_names():
        files = DATASETS[name].files
        listed = "; ".join(f"{f} ({size}, md5 {md5})" for f, size, md5 in files) or "bundled with scikit-learn"
        lines.append(f"  {name:<8} {listed}")
    lines.append("Without network: download a dataset's files yourself and pass the first with --archive "
                 "(an extracted folder works too; cars196 also takes the Kaggle by-classes-folder zip).")
    return "\n".join(lines)


def _train_help() -> str:
    from hdml.data.datasets import dataset_names

    return (f"datasets: {', '.join(dataset_names())}\nmethods:  {', '.join(method_names())}\n"
            "Every --set key with its default and allowed values: hdml config --list [--dataset D --method M]")


def parser() -> argparse.ArgumentParser:
    p = HelpParser(prog="hdml", description=__doc__)
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: log every evaluation and step timing; -vv: also other libraries' INFO lines")
    sub = p.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    s = sub.add_parser("prepare", help="download, verify, extract and split a dataset", formatter_class=raw,
                       epilog=_datasets_help)
    s.add_argument("dataset", help="dataset name (listed below)")
    s.add_argument("--root", required=True, help="data folder; writes ROOT/DATASET/split.csv")
    s.add_argument("--url", action="append", help="mirror to try (repeatable; replaces the built-in list)")
    s.add_argument("--md5", help="expected MD5 of the archive (replaces the built-in checksum)")
    s.add_argument("--archive", help="an archive already on disk, or the folder it was extracted to; no download")
    s.add_argument("--val-folds", type=int, default=0, metavar="K",
                   help="deal the training classes into K folds and write fold 0 as split val (for "
                        "`selection: val`; the reality check's K is 4); default: no val split")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("cache", help="decode and resize a prepared dataset once, into memory-mappable arrays")
    s.add_argument("dataset", help="a prepared dataset (hdml prepare)")
    s.add_argument("--root", required=True, help="data folder holding DATASET/split.csv")
    s.add_argument("--size", type=int, required=True, help="square side after resizing (the run config's image.resize)")
    s.add_argument("--workers", type=int, default=1, help="decoding processes")
    s.set_defaults(func=cmd_cache)

    s = sub.add_parser("train", help="train one run and evaluate its final checkpoint", formatter_class=raw,
                       epilog=_train_help)
    s.add_argument("--dataset", required=True, help="dataset name (listed below); prepared under --root")
    s.add_argument("--method", required=True, help="loss or method name (listed below)")
    s.add_argument("--seed", type=int, default=0, help="seeds model initialisation, batches and augmentation")
    s.add_argument("--out", required=True, help="run folder (metrics.json, curve.csv, model.pt); rerun to resume")
    s.add_argument("--root", default="data", help="data folder holding DATASET/split.csv")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config override, dotted keys (steps=100, hdml.alpha=7); see hdml config --list")
    s.add_argument("--config", metavar="WORKFLOW_YAML",
                   help="take the dataset's and method's settings (train, per_method) of this workflow config, "
                        "e.g. config/config.yaml, as the workflow does; --set overrides them. Without it, a note "
                        "lists what config/config.yaml sets that this run does not")
    s.add_argument("--tuned", metavar="BEST_YAML",
                   help="best.yaml of `hdml tune best`: its settings override the config's (after --set)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("tune", help="tuning mode: one trial of a study on the validation classes, or its best")
    tune = s.add_subparsers(dest="tune_command", required=True, help="trial: run or resume one; best: best.yaml")
    s = tune.add_parser("trial", help="run (or resume) trial INDEX of the study in --study (Optuna TPE, SQLite)")
    s.add_argument("--dataset", required=True, help="a dataset prepared with --val-folds")
    s.add_argument("--method", required=True, help="a method whose plug-ins declare search ranges")
    s.add_argument("--index", type=int, required=True, help="trial index (0..trials-1); rerun to resume")
    s.add_argument("--study", required=True, help="study folder (study.db, trialN/), e.g. results/tune/D/M")
    s.add_argument("--root", default="data", help="data folder holding DATASET/split.csv")
    s.add_argument("--metric", default="map@r", help="validation metric maximised (as selection_metric)")
    s.add_argument("--seed", type=int, default=0, help="training seed of every trial; seeds the sampler with INDEX")
    s.add_argument("--startup-trials", type=int, default=10, help="random trials before TPE models the scores")
    s.add_argument("--folds", type=int, default=1, help="a trial's score: the mean over validation folds 0..K-1")
    s.add_argument("--fold", type=int, default=0, help="the fold this job trains without and scores on")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config override of the trial's training, as for hdml train")
    s.set_defaults(func=cmd_tune_trial)
    s = tune.add_parser("best", help="write the best trial's settings (best.yaml) once every trial is finished")
    s.add_argument("--study", required=True, help="study folder of hdml tune trial")
    s.add_argument("--trials", type=int, required=True, help="trial indices 0..TRIALS-1 make the budget")
    s.add_argument("--out", help="where to write (default: STUDY/best.yaml)")
    s.set_defaults(func=cmd_tune_best)

    s = sub.add_parser("ensemble", help="a seed's fold models evaluated separated (mean) and concatenated (joined "
                                        "embeddings), written as one run folder")
    s.add_argument("parts", nargs="+", help="the fold models' run folders, fold 0 first (evaluated)")
    s.add_argument("--out", required=True, help="the seed folder to write, e.g. results/runs/D/M/V/seed0")
    s.set_defaults(func=cmd_ensemble)

    s = sub.add_parser("config", help="the resolved run config, or every key with its default and allowed values")
    s.add_argument("--list", action="store_true", help="one line per key: key, default, allowed values")
    s.add_argument("--dataset", help="include this dataset's defaults")
    s.add_argument("--method", help="include the defaults of this method's batch layout (needs --dataset)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides, as for hdml train")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("evaluate", help="full metrics of a finished run, from its saved test embeddings")
    s.add_argument("--run", required=True, help="run folder of hdml train (reads embeddings.npz, curve.csv)")
    s.add_argument("--recompute", action="store_true",
                   help="compute the metrics even when the training already did on these same embeddings")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("metrics", help="metrics of saved embeddings, as JSON")
    s.add_argument("--embeddings", required=True,
                   help=".npy, n x d: the queries (and, alone, their own gallery); or a run's embeddings.npz, "
                        "which holds its labels and gallery")
    s.add_argument("--labels", help=".npy, n (with a .npy of embeddings)")
    s.add_argument("--gallery-embeddings", help=".npy, m x d: a separate gallery the queries search")
    s.add_argument("--gallery-labels", help=".npy, m (with --gallery-embeddings)")
    s.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="K of Recall@K")
    s.add_argument("--seed", type=int, default=0, help="k-means seed")
    s.add_argument("--kmeans", choices=["kmeans++", "faiss", "sklearn"], default="kmeans++",
                   help="clustering for NMI/F1: the authors' k-means++ with 10 restarts (default), "
                        "one faiss-style Lloyd run, or scikit-learn's KMeans called as the authors call it")
    s.add_argument("--normalise", action=argparse.BooleanOptionalAction, default=True,
                   help="L2-normalise the embeddings first, as training's evaluation does (default; said on stderr)")
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("aggregate", help="collect evaluated runs into long CSV tables")
    s.add_argument("runs", nargs="+", help="run folders .../DATASET/METHOD/VARIANT/seedN")
    s.add_argument("--out", default="results/metrics.csv",
                   help="metrics, long: dataset,method,variant,seed,metric,value")
    s.add_argument("--curves", default="results/curves.csv", help="learning curves, long")
    s.add_argument("--runs-table", default="results/runs.csv", help="one row of settings per run")
    s.add_argument("--benchmarks", help="Snakemake benchmark folder holding train/ and evaluate/ TSVs")
    s.add_argument("--costs", default="results/costs.csv", help="costs table, written when --benchmarks is given")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("tsne", help="Barnes-Hut t-SNE of a run's test embeddings (Figure 8) as 2-D coordinates")
    s.add_argument("--embeddings", required=True, metavar="NPZ",
                   help="embeddings.npz of hdml train, in its run folder .../DATASET/METHOD/VARIANT/seedN")
    s.add_argument("--out", required=True, metavar="CSV",
                   help="the map: dataset,method,variant,seed,n_test,x,y,label (a random 2000 points at most)")
    s.set_defaults(func=cmd_tsne)

    s = sub.add_parser("report", help="render the HTML report, Markdown/LaTeX tables and figures")
    s.add_argument("--metrics", default="results/metrics.csv", help="metrics.csv of hdml aggregate")
    s.add_argument("--curves", help="curves.csv of `hdml aggregate` (learning curves, ablation)")
    s.add_argument("--runs", help="runs.csv of `hdml aggregate` (each run's alpha)")
    s.add_argument("--costs", help="costs.csv of `hdml aggregate --benchmarks`")
    s.add_argument("--tsne", nargs="*", default=[], metavar="CSV",
                   help="t-SNE maps of `hdml tsne`, candidates for Figure 8; HDML (N-pair), default, "
                        "CUB-200 first, lowest seed is drawn")
    s.add_argument("--losses", nargs="*", default=[], metavar="CSV",
                   help="losses.csv of the runs (in their run directories), for the training-loss figures")
    s.add_argument("--tuning", nargs="*", default=[], metavar="YAML",
                   help="best.yaml of the tuning studies (hdml tune best), for the fair section's tuning budget")
    s.add_argument("--out", default="report", help="report folder (report.html, tables/, figures/)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("check-config", help="validate a workflow config (schema + every run's config)")
    s.add_argument("configfile", nargs="+", help="workflow config(s), later ones overriding earlier ones")
    s.add_argument("--schema", help="JSON schema (default: hdml's own, hdml/schemas/config.schema.yaml)")
    s.add_argument("--no-costs", action="store_true",
                   help="skip the projected compute and disk (hdml/resources/costs.yaml)")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("status", help="runs of a workflow done, running, failed, pending, and the grid's ETA "
                                      "(while Snakemake runs, or after)")
    s.add_argument("configfile", nargs="*", default=["config/config.yaml"],
                   help="workflow config(s) Snakemake runs (default: config/config.yaml)")
    s.add_argument("--results", help="results folder (default: the config's results_dir)")
    s.add_argument("--all", action="store_true", help="also list pending runs")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("summary", help="the end-of-workflow summary: report path, best method per dataset, "
                                       "failures")
    s.add_argument("configfile", nargs="*", default=["config/config.yaml"],
                   help="workflow config(s) Snakemake ran (default: config/config.yaml)")
    s.set_defaults(func=cmd_summary)
    return p


def configure_logging(verbosity: int) -> None:
    """-v: hdml's own INFO lines (every evaluation); -vv: every library's too. Libraries stay at
    WARNING otherwise, so faiss's "Could not load library with AVX2 support" (INFO, at import)
    does not open every log."""
    logging.basicConfig(level=logging.INFO if verbosity >= 2 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("hdml").setLevel(logging.INFO if verbosity else logging.NOTSET)  # NOTSET: the root's


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.verbose)
    from hdml.core.config import Interrupted, TrainingDiverged

    try:
        args.func(args)
    except Interrupted as exc:
        print(f"hdml {args.command}: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        print(f"hdml {args.command}: diverged: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ConfigError, FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hdml {args.command}: error: {msg}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
