"""The network before metric learning: the reference row of every report table.

Each dataset's network (backbone and embedding head as initialised by the seed: the pretrained
backbone with a fresh head, or on digits the small CNN at initialisation) is evaluated without a
single training step, once per dataset and seed. What the methods score above it is what metric
learning adds; a method inside its interval has learnt nothing the evaluation can see.

The plan (`hdml.workflow.plan.plan_runs`) adds these runs as variant VARIANT of the dataset's first method,
trained with `steps: 0` (the method never steps, so which one is immaterial); `hdml aggregate`
files their rows under the reserved method name NAME, variant `default`, so that every table
built from the default runs has the row without knowing of it.
"""
from __future__ import annotations

VARIANT = "untrained"  # the run directory's variant: results/runs/D/<first method>/untrained/seedN
NAME = "untrained"  # its method name in metrics.csv, runs.csv and costs.csv (no plug-in may take it)
DISPLAY = "Network before metric learning (reference)"
OVERRIDES = {"steps": 0, "selection": "last", "val_fold": 0}  # no training: nothing to select or hold out
