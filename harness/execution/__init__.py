"""Running a suite: the sweep driver on Ray Tune, the trainable, the local or joined Ray cluster, GPU sharing,
progress, status, the cost plan and SLURM batch scripts."""
