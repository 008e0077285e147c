#!/usr/bin/env bash
# Run by Snakemake inside the new rule environment (workflow/envs/hdml.yaml), from the directory
# Snakemake was started in: install hdml from that checkout, editable, so jobs run its code.
set -euo pipefail
if [ ! -f pyproject.toml ] || [ ! -d hdml ]; then
    echo "hdml.post-deploy.sh: run snakemake from the hdml-repro checkout (no pyproject.toml/hdml in $PWD)" >&2
    exit 1
fi
python -m pip install --no-deps -e .
