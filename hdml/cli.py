"""The `hdml` command line: one subcommand per workflow step."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path

import yaml


EXIT_USAGE = 2  # bad input: config, files, arguments
EXIT_DIVERGED = 3  # NaN/infinite losses: rerunning will not help
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGINT, rerun to resume


def cmd_prepare(args: argparse.Namespace) -> None:
    from hdml.datasets import get_dataset

    out = get_dataset(args.dataset).prepare(Path(args.root), urls=args.url, md5=args.md5,
                                            archive=Path(args.archive) if args.archive else None)
    print(out)


def cmd_cache(args: argparse.Namespace) -> None:
    from hdml.cache import build_cache
    from hdml.datasets import get_dataset

    spec = get_dataset(args.dataset)
    print(build_cache(Path(args.root), args.dataset, args.size, spec.channels, workers=args.workers))


def cmd_train(args: argparse.Namespace) -> None:
    from hdml.config import parse_sets
    from hdml.trainer import train_run

    result = train_run(root=args.root, dataset=args.dataset, method=args.method, seed=args.seed,
                       out=args.out, overrides=parse_sets(args.set))
    print(json.dumps(result["metrics"], indent=2))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from hdml.evaluate import evaluate_run

    print(json.dumps(evaluate_run(args.run), indent=2))


def cmd_metrics(args: argparse.Namespace) -> None:
    import numpy as np

    from hdml.metrics import evaluate

    emb, labels = np.load(args.embeddings, allow_pickle=False), np.load(args.labels, allow_pickle=False)
    try:
        result = evaluate(emb, labels, args.ks, seed=args.seed, kmeans_algorithm=args.kmeans)
    except ValueError as exc:
        raise ValueError(f"{args.embeddings}, {args.labels}: {exc}") from exc
    print(json.dumps(result, indent=2))


def cmd_aggregate(args: argparse.Namespace) -> None:
    from hdml.aggregate import aggregate

    aggregate([Path(r) for r in args.runs], Path(args.out), Path(args.curves), Path(args.runs_table),
              benchmarks=Path(args.benchmarks) if args.benchmarks else None,
              out_costs=Path(args.costs))


def cmd_report(args: argparse.Namespace) -> None:
    from hdml.report import render

    print(render(Path(args.metrics), Path(args.out), curves_csv=args.curves, runs_csv=args.runs,
                 costs_csv=args.costs, embeddings=[Path(e) for e in args.embeddings]))


def cmd_check_config(args: argparse.Namespace) -> None:
    from hdml.plan import load_schema, validate_workflow_config

    config = {}
    for path in args.configfile:
        config.update(yaml.safe_load(Path(path).read_text()) or {})
    schema = load_schema(Path(args.schema)) if args.schema else None
    runs = validate_workflow_config(config, schema, source=", ".join(args.configfile))
    print(f"{len(runs)} runs OK")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hdml", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log every evaluation")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="download, verify, extract and split a dataset")
    s.add_argument("dataset")
    s.add_argument("--root", required=True, help="data folder; writes ROOT/DATASET/split.csv")
    s.add_argument("--url", action="append", help="mirror to try (repeatable; replaces the built-in list)")
    s.add_argument("--md5", help="expected MD5 of the archive (replaces the built-in checksum)")
    s.add_argument("--archive", help="an archive already on disk; no download")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("cache", help="decode and resize a prepared dataset once, into memory-mappable arrays")
    s.add_argument("dataset")
    s.add_argument("--root", required=True)
    s.add_argument("--size", type=int, required=True, help="square side after resizing (the run config's image.resize)")
    s.add_argument("--workers", type=int, default=1, help="decoding processes")
    s.set_defaults(func=cmd_cache)

    s = sub.add_parser("train", help="train one run and evaluate its final checkpoint")
    s.add_argument("--dataset", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="run folder (metrics.json, curve.csv, model.pt)")
    s.add_argument("--root", default="data", help="data folder holding DATASET/split.csv")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config override, dotted keys (steps=100, hdml.alpha=7)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="full metrics of a finished run, from its saved test embeddings")
    s.add_argument("--run", required=True)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("metrics", help="metrics of saved embeddings, as JSON")
    s.add_argument("--embeddings", required=True, help=".npy, n x d")
    s.add_argument("--labels", required=True, help=".npy, n")
    s.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    s.add_argument("--seed", type=int, default=0, help="k-means seed")
    s.add_argument("--kmeans", choices=["kmeans++", "faiss"], default="kmeans++",
                   help="clustering for NMI/F1: the authors' k-means++ with 10 restarts (default) or "
                        "one faiss-style Lloyd run")
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("aggregate", help="collect evaluated runs into long CSV tables")
    s.add_argument("runs", nargs="+", help="run folders .../DATASET/METHOD/VARIANT/seedN")
    s.add_argument("--out", default="results/metrics.csv", help="metrics, long: dataset,method,variant,seed,metric,value")
    s.add_argument("--curves", default="results/curves.csv", help="learning curves, long")
    s.add_argument("--runs-table", default="results/runs.csv", help="one row of settings per run")
    s.add_argument("--benchmarks", help="Snakemake benchmark folder holding train/ and evaluate/ TSVs")
    s.add_argument("--costs", default="results/costs.csv", help="costs table, written when --benchmarks is given")
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("report", help="render the HTML report, Markdown/LaTeX tables and figures")
    s.add_argument("--metrics", default="results/metrics.csv")
    s.add_argument("--curves", help="curves.csv of `hdml aggregate` (learning curves, ablation)")
    s.add_argument("--runs", help="runs.csv of `hdml aggregate` (each run's alpha)")
    s.add_argument("--costs", help="costs.csv of `hdml aggregate --benchmarks`")
    s.add_argument("--embeddings", nargs="*", default=[], metavar="NPZ",
                   help="embeddings.npz of candidate runs for the t-SNE map; HDML (N-pair), default, "
                        "CUB-200 first, lowest seed is drawn")
    s.add_argument("--out", default="report")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("check-config", help="validate a workflow config (schema + every run's config)")
    s.add_argument("configfile", nargs="+")
    s.add_argument("--schema", help="JSON schema (default: workflow/schemas/config.schema.yaml)")
    s.set_defaults(func=cmd_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from hdml.config import ConfigError, Interrupted, TrainingDiverged

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
