rule aggregate:
    input:
        [f"{d}/evaluation.json" for d in RUN_DIRS],
        [f"{d}/curve.csv" for d in RUN_DIRS],
    output:
        metrics=f"{RESULTS}/metrics.csv",
        curves=f"{RESULTS}/curves.csv",
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
        "hdml aggregate {params.runs} --out {output.metrics} --curves {output.curves} > {log} 2>&1"


rule report:
    input:
        metrics=rules.aggregate.output.metrics,
        curves=rules.aggregate.output.curves,
    output:
        html=f"{REPORT}/report.html",
        tables=[f"{REPORT}/tables/{d}.md" for d in config["datasets"]],
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
        "hdml report --metrics {input.metrics} --curves {input.curves} --out {REPORT} > {log} 2>&1"
