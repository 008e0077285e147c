# Downloads need the network: on a cluster they run on the submit host.
localrules:
    prepare,


rule prepare:
    output:
        f"{DATA}/{{dataset}}/split.csv",
    params:
        extra=prepare_args,
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv"
    threads: 1
    shell:
        "hdml prepare {wildcards.dataset} --root {DATA} {params.extra} > {log} 2>&1"
