"""Input and output across the network: what is local and what is remote (`remote.py`: URL
schemes, fsspec filesystems, storage options, the hub token from the environment) and the one
retry policy for network calls (`retry.py`: which errors are transient, waits, attempts)."""
