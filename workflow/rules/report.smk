rule aggregate:
    input:
        evaluations=[f"{d}/evaluation.json" for d in RUN_DIRS],
        curves=[f"{d}/curve.csv" for d in RUN_DIRS],
        benchmarks=benchmark_files(),
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
        "hdml aggregate {params.runs:q} --out {output.metrics:q} --curves {output.curves:q} --runs-table {output.runs:q}"
        " --benchmarks {params.benchmarks:q} --costs {output.costs:q} > {log:q} 2>&1"


# Figure 8's t-SNE, off the report's serial tail: it starts once its run is trained (priority:
# before the queued training jobs, which would otherwise push it to the DAG's end).
rule tsne:
    input:
        embeddings=f"{RUN_DIR}/embeddings.npz",
    output:
        coordinates=f"{RESULTS}/tsne/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.csv",
    log:
        f"{RESULTS}/logs/tsne/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tsne/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    priority: 10
    conda:
        HDML_ENV
    threads: res("tsne", "threads")
    resources:
        **rule_resources("tsne"),
    shell:
        "hdml tsne --embeddings {input.embeddings:q} --out {output.coordinates:q} > {log:q} 2>&1"


rule report:
    input:
        metrics=rules.aggregate.output.metrics,
        curves=rules.aggregate.output.curves,
        runs=rules.aggregate.output.runs,
        costs=rules.aggregate.output.costs,
        tsne=tsne_map(),
        losses=[f"{d}/losses.csv" for d in RUN_DIRS],
        tuning=[f"{RESULTS}/tune/{d}/{m}/best.yaml" for d, m in tune_studies(config)],
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
        tsne=lambda w, input: ("--tsne " + " ".join(map(shlex.quote, input.tsne)) if input.tsne else ""),
        tuning=lambda w, input: ("--tuning " + " ".join(map(shlex.quote, input.tuning)) if input.tuning else ""),
    shell:
        "hdml report --metrics {input.metrics:q} --curves {input.curves:q} --runs {input.runs:q} --costs {input.costs:q}"
        " {params.tsne} --losses {input.losses:q} {params.tuning} --out {params.out:q} > {log:q} 2>&1"
