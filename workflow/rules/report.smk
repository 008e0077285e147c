rule aggregate:
    input:
        evaluations=[f"{d}/evaluation.json" for d in RUN_DIRS],
        curves=[f"{d}/curve.csv" for d in RUN_DIRS],
        benchmarks=[f"{RESULTS}/benchmarks/{s}/{r.path}.tsv" for r in RUNS.values() for s in ("train", "evaluate")],
    output:
        metrics=report(f"{RESULTS}/metrics.csv", caption="../report/metrics.rst", category="Data"),
        curves=f"{RESULTS}/curves.csv",
        runs=f"{RESULTS}/runs.csv",
        costs=report(f"{RESULTS}/costs.csv", caption="../report/costs.rst", category="Data"),
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    conda:
        HDML_ENV
    threads: res("aggregate", "threads")
    resources:
        **rule_resources("aggregate"),
    params:
        runs=RUN_DIRS,
        benchmarks=lambda w, output: Path(output.metrics).parent / "benchmarks",
    shell:
        "hdml aggregate {params.runs} --out {output.metrics} --curves {output.curves} --runs-table {output.runs}"
        " --benchmarks {params.benchmarks} --costs {output.costs} > {log} 2>&1"


rule report:
    input:
        metrics=rules.aggregate.output.metrics,
        curves=rules.aggregate.output.curves,
        runs=rules.aggregate.output.runs,
        costs=rules.aggregate.output.costs,
        embeddings=tsne_embeddings(),
        losses=[f"{d}/losses.csv" for d in RUN_DIRS],
    output:
        html=report(
            f"{REPORT}/report.html",
            caption="../report/report_html.rst",
            category="Report",
        ),
        tables=report(
            directory(f"{REPORT}/tables"),
            patterns=["{table}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory(f"{REPORT}/figures"),
            patterns=["{figure}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        HDML_ENV
    threads: res("report", "threads")
    resources:
        **rule_resources("report"),
    params:
        out=lambda w, output: Path(output.html).parent,
        embeddings=lambda w, input: (f"--embeddings {input.embeddings}" if input.embeddings else ""),
    shell:
        "hdml report --metrics {input.metrics} --curves {input.curves} --runs {input.runs} --costs {input.costs}"
        " {params.embeddings} --losses {input.losses} --out {params.out} > {log} 2>&1"
