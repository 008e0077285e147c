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
    threads: res("prepare", "threads")
    resources:
        gpu=res("prepare", "gpu"),
        mem_mb=res("prepare", "mem_mb"),
        runtime=res("prepare", "runtime"),
    shell:
        "hdml prepare {wildcards.dataset} --root {DATA} {params.extra} > {log} 2>&1"
