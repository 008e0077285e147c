#!/usr/bin/env bash
# Run by Snakemake inside the new rule environment (workflow/envs/hdml.yaml): install hdml,
# editable, from the checkout whose Snakefile runs (HDML_SOURCE, set by workflow/rules/common.smk),
# so that jobs run that checkout's code.
set -euo pipefail
source="${HDML_SOURCE:?HDML_SOURCE unset: run this through the workflow (snakemake --sdm conda)}"
if [ ! -f "$source/pyproject.toml" ]; then
    echo "hdml.post-deploy.sh: $source has no pyproject.toml: not an hdml-repro checkout" >&2
    exit 1
fi
python -m pip install --no-deps -e "$source"
