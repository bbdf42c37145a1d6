"""Where a run executes: the environment report (scheduler, hosts, GPUs) and the Ray cluster
client (address checks, joining without a silent local fallback, resources per shard).

Ray only: nothing here imports Prefect. The prefect-ray task runner lives in `tasks/`.
"""
