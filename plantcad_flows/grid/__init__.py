"""Experiment grids, the pure core: the typed `grid.yaml` spec (`spec`), its expansion into cells
(`expand`), cell names (`names`) and per-cell resources with their mapping onto work-pool job
variables (`resources`). Nothing here imports Prefect; the grid flows submit what this plans.
"""
