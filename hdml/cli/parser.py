"""The `hdml` argument parser: every subcommand, its arguments and help."""
from __future__ import annotations

import argparse

from hdml.cli import commands


class HelpParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be a function, called only when help is shown: listing
    the methods imports torch, which commands like `hdml aggregate` do not need."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def _datasets_help() -> str:
    """Every dataset and the files `--archive` takes for it (when no mirror works)."""
    # here, not at the top: only `--help` pays for listing the plug-ins (start-up time)
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
    # here, not at the top: only `--help` pays for listing the plug-ins (start-up time)
    from hdml.core.registry import method_names
    from hdml.data.datasets import dataset_names

    return (f"datasets: {', '.join(dataset_names())}\nmethods:  {', '.join(method_names())}\n"
            "Every --set key with its default and allowed values: hdml config --list [--dataset D --method M]")


def parser() -> argparse.ArgumentParser:
    p = HelpParser(prog="hdml", description="The `hdml` command line: one subcommand per workflow step.")
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
    s.set_defaults(func=commands.cmd_prepare)

    s = sub.add_parser("cache", help="decode and resize a prepared dataset once, into memory-mappable arrays")
    s.add_argument("dataset", help="a prepared dataset (hdml prepare)")
    s.add_argument("--root", required=True, help="data folder holding DATASET/split.csv")
    s.add_argument("--size", type=int, required=True, help="square side after resizing (the run config's image.resize)")
    s.add_argument("--workers", type=int, default=1, help="decoding processes")
    s.set_defaults(func=commands.cmd_cache)

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
    s.set_defaults(func=commands.cmd_train)

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
    s.set_defaults(func=commands.cmd_tune_trial)
    s = tune.add_parser("best", help="write the best trial's settings (best.yaml) once every trial is finished")
    s.add_argument("--study", required=True, help="study folder of hdml tune trial")
    s.add_argument("--trials", type=int, required=True, help="trial indices 0..TRIALS-1 make the budget")
    s.add_argument("--out", help="where to write (default: STUDY/best.yaml)")
    s.set_defaults(func=commands.cmd_tune_best)

    s = sub.add_parser("ensemble", help="a seed's fold models evaluated separated (mean) and concatenated (joined "
                                        "embeddings), written as one run folder")
    s.add_argument("parts", nargs="+", help="the fold models' run folders, fold 0 first (evaluated)")
    s.add_argument("--out", required=True, help="the seed folder to write, e.g. results/runs/D/M/V/seed0")
    s.set_defaults(func=commands.cmd_ensemble)

    s = sub.add_parser("config", help="the resolved run config, or every key with its default and allowed values")
    s.add_argument("--list", action="store_true", help="one line per key: key, default, allowed values")
    s.add_argument("--dataset", help="include this dataset's defaults")
    s.add_argument("--method", help="include the defaults of this method's batch layout (needs --dataset)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides, as for hdml train")
    s.set_defaults(func=commands.cmd_config)

    s = sub.add_parser("evaluate", help="full metrics of a finished run, from its saved test embeddings")
    s.add_argument("--run", required=True, help="run folder of hdml train (reads embeddings.npz, curve.csv)")
    s.add_argument("--recompute", action="store_true",
                   help="compute the metrics even when the training already did on these same embeddings")
    s.set_defaults(func=commands.cmd_evaluate)

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
    s.set_defaults(func=commands.cmd_metrics)

    s = sub.add_parser("aggregate", help="collect evaluated runs into long CSV tables")
    s.add_argument("runs", nargs="+", help="run folders .../DATASET/METHOD/VARIANT/seedN")
    s.add_argument("--out", default="results/metrics.csv",
                   help="metrics, long: dataset,method,variant,seed,metric,value")
    s.add_argument("--curves", default="results/curves.csv", help="learning curves, long")
    s.add_argument("--runs-table", default="results/runs.csv", help="one row of settings per run")
    s.add_argument("--benchmarks", help="Snakemake benchmark folder holding train/ and evaluate/ TSVs")
    s.add_argument("--costs", default="results/costs.csv", help="costs table, written when --benchmarks is given")
    s.set_defaults(func=commands.cmd_aggregate)

    s = sub.add_parser("tsne", help="Barnes-Hut t-SNE of a run's test embeddings (Figure 8) as 2-D coordinates")
    s.add_argument("--embeddings", required=True, metavar="NPZ",
                   help="embeddings.npz of hdml train, in its run folder .../DATASET/METHOD/VARIANT/seedN")
    s.add_argument("--out", required=True, metavar="CSV",
                   help="the map: dataset,method,variant,seed,n_test,x,y,label (a random 2000 points at most)")
    s.set_defaults(func=commands.cmd_tsne)

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
    s.set_defaults(func=commands.cmd_report)

    s = sub.add_parser("check-config", help="validate a workflow config (schema + every run's config)")
    s.add_argument("configfile", nargs="+", help="workflow config(s), later ones overriding earlier ones")
    s.add_argument("--schema", help="JSON schema (default: hdml's own, hdml/schemas/config.schema.yaml)")
    s.add_argument("--no-costs", action="store_true",
                   help="skip the projected compute and disk (hdml/resources/costs.yaml)")
    s.set_defaults(func=commands.cmd_check_config)

    s = sub.add_parser("status", help="runs of a workflow done, running, failed, pending, and the grid's ETA "
                                      "(while Snakemake runs, or after)")
    s.add_argument("configfile", nargs="*", default=["config/config.yaml"],
                   help="workflow config(s) Snakemake runs (default: config/config.yaml)")
    s.add_argument("--results", help="results folder (default: the config's results_dir)")
    s.add_argument("--all", action="store_true", help="also list pending runs")
    s.set_defaults(func=commands.cmd_status)

    s = sub.add_parser("summary", help="the end-of-workflow summary: report path, best method per dataset, "
                                       "failures")
    s.add_argument("configfile", nargs="*", default=["config/config.yaml"],
                   help="workflow config(s) Snakemake ran (default: config/config.yaml)")
    s.set_defaults(func=commands.cmd_summary)
    return p

