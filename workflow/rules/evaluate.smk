rule evaluate:
    input:
        metrics=f"{RUN_DIR}/metrics.json",
        embeddings=f"{RUN_DIR}/embeddings.npz",
        curve=f"{RUN_DIR}/curve.csv",
    output:
        evaluation=f"{RUN_DIR}/evaluation.json",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        HDML_ENV
    threads: res("evaluate", "threads")
    resources:
        **rule_resources("evaluate"),
    params:
        run=lambda w, input: Path(input.metrics).parent,
    shell:
        "hdml evaluate --run {params.run:q} > {log:q} 2>&1"
