rule train:
    input:
        split=f"{DATA}/{{dataset}}/split.csv",
        cache=run_cache,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        curve=f"{RUN_DIR}/curve.csv",
        losses=f"{RUN_DIR}/losses.csv",
        model=f"{RUN_DIR}/model.pt",
        config=f"{RUN_DIR}/config.yaml",
        embeddings=f"{RUN_DIR}/embeddings.npz",
    params:
        sets=run_sets,
        out=RUN_DIR,
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    threads: res("train", "threads")
    resources:
        gpu=res("train", "gpu"),
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
    shell:
        "hdml -v train --dataset {wildcards.dataset} --method {wildcards.method} --seed {wildcards.seed}"
        " --root {DATA} --out {params.out} {params.sets} > {log} 2>&1"
