rule evaluate:
    input:
        metrics=f"{RUN_DIR}/metrics.json",
        embeddings=f"{RUN_DIR}/embeddings.npz",
        curve=f"{RUN_DIR}/curve.csv",
    output:
        evaluation=f"{RUN_DIR}/evaluation.json",
    params:
        run=RUN_DIR,
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    threads: res("evaluate", "threads")
    resources:
        gpu=res("evaluate", "gpu"),
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
    shell:
        "hdml evaluate --run {params.run} > {log} 2>&1"
