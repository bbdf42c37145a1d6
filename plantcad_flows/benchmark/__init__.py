"""The benchmark itself: the PlantCAD2 zero-shot task registry (12 tasks in 4 families, their
splits, default masks and metrics) and the synthetic genome and benchmark generator that stands in
for the Hugging Face dataset on machines without network access."""
