# hdml-repro: the whole reproduction as one DAG.
#   prepare -> train (per dataset, method, variant, seed) -> evaluate -> aggregate -> report
# Default config: the embedded glyphs demo (config/digits.yaml: the former digits demo).
# Paper grid: --configfile config/paper.yaml
from snakemake.utils import min_version

min_version("9.0")


# The demo config applies only when no --configfile is given: a --configfile stands alone.
# (Snakemake would merge it into this one, and a config without `tsne:` or `variants:` would
# silently inherit the demo's.) `--config key=value` still updates whichever config is used.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{REPORT}/report.html",


# At the end: where the report is, each dataset's best method, what failed (`hdml summary`);
# `hdml status` tells the same while the workflow runs.
onsuccess:
    print(end_summary())


onerror:
    print(end_summary())
