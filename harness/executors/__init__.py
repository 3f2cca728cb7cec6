"""Executors run packs and leave one shard per job. `local`: one worker per device; `slurm`: submitit."""
