"""The local services a run or `plantcad-flows server` starts and watches: the Prefect server
(`prefect_server.py`: found, borrowed or started on a free port), the record that says whose a
local server is and whether it outlives its starter (`server_records.py`), a local PostgreSQL for
it (`postgres.py`), and the watchdog that ends a run whose server stopped answering
(`api_watchdog.py`). Processes, not commands: the CLI parses and prints, this room runs them.
Prefect is imported only in `prefect_server.py`, lazily, to flush the log worker."""
