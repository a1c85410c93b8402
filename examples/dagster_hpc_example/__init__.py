"""A Dagster project that runs every asset through dagster-hpc (locally or on Slurm)."""
