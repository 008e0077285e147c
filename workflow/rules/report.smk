def tsne_embeddings() -> list[str]:
    """The run whose test embeddings the t-SNE map (Figure 8) shows, if the config names one."""
    t = config.get("tsne")
    if not t:
        return []
    seed = t.get("seed", min(config["seeds"]))
    return [f"{RESULTS}/runs/{t['dataset']}/{t['method']}/default/seed{seed}/embeddings.npz"]


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
    params:
        runs=RUN_DIRS,
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    threads: res("aggregate", "threads")
    resources:
        gpu=res("aggregate", "gpu"),
        mem_mb=res("aggregate", "mem_mb"),
        runtime=res("aggregate", "runtime"),
    shell:
        "hdml aggregate {params.runs} --out {output.metrics} --curves {output.curves} --runs-table {output.runs}"
        " --benchmarks {RESULTS}/benchmarks --costs {output.costs} > {log} 2>&1"


rule report:
    input:
        metrics=rules.aggregate.output.metrics,
        curves=rules.aggregate.output.curves,
        runs=rules.aggregate.output.runs,
        costs=rules.aggregate.output.costs,
        embeddings=tsne_embeddings(),
        losses=[f"{d}/losses.csv" for d in RUN_DIRS],
    output:
        html=report(f"{REPORT}/report.html", caption="../report/report_html.rst", category="Report"),
        tables=report(directory(f"{REPORT}/tables"), patterns=["{table}.md"], caption="../report/tables.rst",
                      category="Tables"),
        figures=report(directory(f"{REPORT}/figures"), patterns=["{figure}.png"], caption="../report/figures.rst",
                       category="Figures", labels={"figure": "{figure}"}),
    params:
        embeddings=lambda w, input: f"--embeddings {input.embeddings}" if input.embeddings else "",
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    threads: res("report", "threads")
    resources:
        gpu=res("report", "gpu"),
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
    shell:
        "hdml report --metrics {input.metrics} --curves {input.curves} --runs {input.runs} --costs {input.costs}"
        " {params.embeddings} --losses {input.losses} --out {REPORT} > {log} 2>&1"
