"""What the Snakemake DAG runs and reports about itself: the plan of runs, tuning trials, costs and status."""
