# hdml-repro: the whole reproduction as one DAG.
#   prepare -> train (per dataset, method, variant, seed) -> evaluate -> aggregate -> report
# Default config: the embedded digits demo. Paper grid: --configfile config/paper.yaml
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
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
