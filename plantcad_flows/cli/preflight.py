"""Bad input, found before a run starts: the checks `plantcad-flows eval` makes after planning
and before a Prefect flow run exists, a model loads or anything is written.

The flow checks the same things again where it meets them (a prepared split is validated, a
model's tokenizer is checked when it loads), because deployments start the flow without this
CLI. But a user at a terminal should get one line naming the field and the value, exit status 2,
and no flow run, results file or half-filled prefix for a typo. So, for the cells the plan will
run:
1. each model (local, or a hub id's config and tokenizer files at its resolved commit; no
   weights) fits its inputs, has an architecture transformers can load as its type (or trusted
   code), and a tokenizer that scoring can use; CUDA exists when this host scores;
2. each split at a path is validated exactly as the prepare step will, a batch at a time
   (columns, one sequence length, ACGTN, labels 0/1, SV coordinates, empty after sampling);
3. the storage prefix is created and written to (unwritable, or an S3 endpoint that does not
   answer);
4. each variant set is prepared, by the flow's own step (`steps.prepare`): its checks need one
   pass over the variants (REF against the FASTA, labels, what is left to score), and the flow
   then finds the step complete instead of reading them again. A bad set leaves nothing behind.
A split from the hub is validated by the flow's prepare step, before any model loads.
"""

from __future__ import annotations

from plantcad_flows.config import EvalConfig, parse_address


def preflight(cfg: EvalConfig, cells: list) -> None:
    """Raise the first bad input among `cells` (the plan's cells to run).

    Raises:
        ValidationError / DeviceError / StorageError: one line naming the field and the value.
    """
    if not cells:
        return
    from plantcad_flows.data.splits import validate_split
    from plantcad_flows.layout.storage import ensure_prefix
    from plantcad_flows.scoring.preflight import check_model

    scores_here = not cfg.ray.enabled or parse_address(cfg.ray.address).kind == "local"
    models = {}  # per model, its longest context: the one a position limit can refuse
    for c in cells:
        seen = models.get(c.model.label)
        if seen is None or c.model.context_length > seen.context_length:
            models[c.model.label] = c.model
    for label, model in models.items():
        lengths = [c.split.seq_length for c in cells if c.model.label == label]
        check_model(model, cfg.compute, scores_here, lengths)
    splits = {c.split.key: c.split for c in cells}
    for split in splits.values():
        if split.path and not split.family.prepare_in_preflight:
            validate_split(split, cfg.sampling)
    ensure_prefix(cfg.executor.prefix)  # bad data or models leave no prefix behind
    # a family whose data are checked by preparing them (a variant set) is prepared here
    jobs = {c.split_job.key: c.split_job for c in cells if c.split.family.prepare_in_preflight}
    if jobs:
        from plantcad_flows.steps import prepare

        for job in jobs.values():
            prepare(job)
