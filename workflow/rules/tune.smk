# Tuning mode (hdml.workflow.tune): per (dataset, method) study of a `tuned: true` variant, `tune.trials`
# trial jobs (Optuna TPE on the validation classes, one SQLite study, resumable), then best.yaml,
# which the variant's runs train with (rule train, input `tuned`).
# With `tune.folds` K > 1 each trial is K jobs, one per validation fold (the mean of their scores
# is the trial's), in trialN/foldF/ (TRIAL_KEY).
STUDY_DIR = f"{RESULTS}/tune/{{dataset}}/{{method}}"


rule tune_trial:
    input:
        split=f"{DATA}/{{dataset}}/split.csv",
        cache=trial_cache,
    output:
        trial=f"{STUDY_DIR}/{TRIAL_KEY}/trial.json",
    log:
        f"{RESULTS}/logs/tune/{{dataset}}/{{method}}/{TRIAL_KEY}.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{dataset}}/{{method}}/{TRIAL_KEY}.tsv"
    conda:
        HDML_ENV
    threads: trial_resources()["threads"]
    resources:
        **{k: v for k, v in trial_resources().items() if k != "threads"},
    params:
        sets=trial_sets,
        study=lambda w: f"{RESULTS}/tune/{w.dataset}/{w.method}",
        fold=lambda w: w.get("fold", 0),
        root=lambda w, input: Path(input.split).parents[1],
        tune=f"--metric {TUNE['metric']} --seed {TUNE['seed']} --startup-trials {TUNE['startup_trials']}"
        f" --folds {TUNE['folds']}",
    shell:
        "hdml -v tune trial --dataset {wildcards.dataset} --method {wildcards.method} --index {wildcards.trial}"
        " --fold {params.fold} --study {params.study:q} --root {params.root:q} {params.tune} {params.sets} > {log:q} 2>&1"


rule tune_best:
    input:
        trials=trial_records,
    output:
        best=f"{STUDY_DIR}/best.yaml",
    log:
        f"{RESULTS}/logs/tune/{{dataset}}/{{method}}/best.log",
    benchmark:
        f"{RESULTS}/benchmarks/tune/{{dataset}}/{{method}}/best.tsv"
    conda:
        HDML_ENV
    threads: res("aggregate", "threads")
    resources:
        **rule_resources("aggregate"),
    params:
        study=lambda w, output: Path(output.best).parent,
        trials=lambda w: TUNE["trials"],
    shell:
        "hdml tune best --study {params.study:q} --trials {params.trials} --out {output.best:q} > {log:q} 2>&1"
