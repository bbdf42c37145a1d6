"""What a model or a split really is, resolved once per run at plan time: a hub branch or tag to
its commit sha, a local directory or file to a content fingerprint, an `s3://` object to its ETag
and size; and the checkpoints a sweep has written so far. The plan carries these identities into
every cache key, provenance file and results row, so that a cached result means the same model,
data and code, never a name or a path alone."""
