"""What a run reports: metrics computed per the benchmark's protocol, ROC / PR curves, the typed
results rows and fixed table, and the run's markdown summary."""
