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


rule cache:
    input:
        f"{DATA}/{{dataset}}/split.csv",
    output:
        train=f"{DATA}/{{dataset}}/cache-{{size}}/train.npy",
        test=f"{DATA}/{{dataset}}/cache-{{size}}/test.npy",
        meta=f"{DATA}/{{dataset}}/cache-{{size}}/meta.json",
    log:
        f"{RESULTS}/logs/cache/{{dataset}}-{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cache/{{dataset}}-{{size}}.tsv"
    threads: res("cache", "threads")
    resources:
        gpu=res("cache", "gpu"),
        mem_mb=res("cache", "mem_mb"),
        runtime=res("cache", "runtime"),
    shell:
        "hdml cache {wildcards.dataset} --root {DATA} --size {wildcards.size} --workers {threads} > {log} 2>&1"
