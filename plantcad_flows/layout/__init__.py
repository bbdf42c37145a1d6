"""Where everything lives and what it is: the storage backends and atomic writes, content hashes
of step configurations, shards of a cell, and the evaluation plan (cells, their statuses and the
completeness checks that decide them)."""
