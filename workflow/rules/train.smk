rule train:
    input:
        split=f"{DATA}/{{dataset}}/split.csv",
        cache=run_cache,
        tuned=run_tuned,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        curve=f"{RUN_DIR}/curve.csv",
        losses=f"{RUN_DIR}/losses.csv",
        model=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/config.yaml",
        embeddings=f"{RUN_DIR}/embeddings.npz",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    conda:
        HDML_ENV
    threads: res("train", "threads")
    resources:
        **rule_resources("train"),
    params:
        sets=run_sets,
        out=lambda w, output: Path(output.metrics).parent,
        root=lambda w, input: Path(input.split).parents[1],
        tuned=lambda w, input: "--tuned " + " ".join(map(shlex.quote, input.tuned)) if input.tuned else "",
    shell:
        "hdml -v train --dataset {wildcards.dataset} --method {wildcards.method} --seed {wildcards.seed}"
        " --root {params.root:q} --out {params.out:q} {params.sets} {params.tuned} > {log:q} 2>&1"
