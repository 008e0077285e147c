# Final models per fold (hdml.eval.ensemble): a seed of a variant with `folds: K` joins its K fold runs
# (VARIANT.foldF, trained and evaluated like any run) into one run folder, evaluated separated (the
# fold models' mean) and concatenated (their embeddings joined). Its variants only (FOLDED).
ruleorder: ensemble > evaluate
ruleorder: ensemble > train


rule ensemble:
    input:
        evaluations=ensemble_parts,
    output:
        evaluation=f"{RUN_DIR}/evaluation.json",
        metrics=f"{RUN_DIR}/metrics.json",
        curve=f"{RUN_DIR}/curve.csv",
        losses=f"{RUN_DIR}/losses.csv",
        config=f"{RUN_DIR}/config.yaml",
        embeddings=f"{RUN_DIR}/embeddings.npz",
    log:
        f"{RESULTS}/logs/ensemble/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{method}}/{{variant}}/seed{{seed}}.tsv"
    wildcard_constraints:
        variant=FOLDED,
    conda:
        HDML_ENV
    threads: res("evaluate", "threads")
    resources:
        **rule_resources("evaluate"),
    params:
        parts=lambda w, input: [str(Path(e).parent) for e in input.evaluations],
        out=lambda w, output: Path(output.evaluation).parent,
    shell:
        "hdml ensemble {params.parts:q} --out {params.out:q} > {log:q} 2>&1"
