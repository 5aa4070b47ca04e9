"""Executors run pipeline steps on a cluster: `local` (subprocesses here) and `slurm` (sbatch & co)."""
