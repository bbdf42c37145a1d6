"""Publishing a finished run to the Hugging Face hub: its results, leaderboard files, each cell's
predictions, config and identities, and a dataset card listing every published run.

The core is pure and hub-agnostic: `bundle.py` reads one run's files from the prefix into a
manifest (repo path -> bytes), `card.py` merges the run into the repo's run index and renders the
card from it (deterministic: the same runs give the same bytes), `changes.py` decides what differs
from what the repo holds, by content. `hub.py` is the one module that calls `huggingface_hub`.
"""
