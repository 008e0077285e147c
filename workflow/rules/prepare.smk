# Downloads need the network: on a cluster they run on the submit host.
localrules:
    prepare,


rule prepare:
    output:
        f"{DATA}/{{dataset}}/split.csv",
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare/{{dataset}}.tsv"
    conda:
        HDML_ENV
    threads: res("prepare", "threads")
    resources:
        **rule_resources("prepare"),
    params:
        root=lambda w, output: Path(output[0]).parents[1],
        data=prepare_args,
        download=download_args,
    shell:
        "hdml prepare {wildcards.dataset} --root {params.root:q} {params.data} {params.download} > {log:q} 2>&1"


rule cache:
    input:
        f"{DATA}/{{dataset}}/split.csv",
    output:
        # one SPLIT.npy per split of split.csv beside it (names known only once it exists);
        # meta.json is written last, so it stands for the whole cache
        meta=f"{DATA}/{{dataset}}/cache-{{size}}/meta.json",
    log:
        f"{RESULTS}/logs/cache/{{dataset}}-{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cache/{{dataset}}-{{size}}.tsv"
    conda:
        HDML_ENV
    threads: res("cache", "threads")
    resources:
        **rule_resources("cache"),
    params:
        root=lambda w, output: Path(output.meta).parents[2],
    shell:
        "hdml cache {wildcards.dataset} --root {params.root:q} --size {wildcards.size} --workers {threads} > {log:q} 2>&1"
