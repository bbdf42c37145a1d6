"""The variant_effect family's step bodies (`VariantEffect.steps` names this class).

They differ from the generic ones (`plantcad_flows.steps.Steps`) only where a variant set's data
differ from a table of sequences; everything else (markers, integrity records, the row-range
reader, the batched and prefetched scoring pipeline, the merge, `metrics.json`, the results row)
is the generic step's:

* `prepare`: the set's checks and its scorable SNVs, streamed into `variants.parquet`
  (`variants.prepare`), recorded like `examples.parquet`;
* `shard_frame`: the reference windows of a shard's rows, read from the FASTA by index,
  `chunk_rows` variants at a time (memory: one chunk of windows, whatever the shard's size);
  the family's `score` reads the model at their centre;
* `finish`: the scores in VCF order with the set's own columns, written as the user's files
  (`variant_scores.parquet`, the bgzipped TSV and its tabix index, by `variants.outputs`); the
  results row adds the records read and the counts skipped per reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from plantcad_flows.layout.integrity import record_for
from plantcad_flows.layout.storage import to_path
from plantcad_flows.variants.outputs import scores_frame, write_outputs
from plantcad_flows.variants.prepare import VARIANTS, prepare_variant_set
from plantcad_flows.variants.reference import ReferenceGenome
from plantcad_flows.variants.sources import open_fasta

WINDOW_BYTES = 1 << 27  # reference bases fetched per chunk of a shard (128 MB)
READ_COLUMNS = ["row_index", "chrom", "pos", "ref", "alt"]


def windows_frame(rows: pd.DataFrame, genome: ReferenceGenome, length: int) -> pd.DataFrame:
    """The frame a variant_effect family scores: row_index, label (none), the reference window
    of each variant (`sequence`, `length` bases, REF at index `length // 2 - 1`), ref and alt."""
    n = len(rows)
    w = genome.windows(rows["chrom"].to_numpy(dtype=object), rows["pos"].to_numpy(np.int64), length)
    text = np.ascontiguousarray(w).tobytes().decode("ascii")
    return pd.DataFrame(
        {
            "row_index": rows["row_index"].to_numpy(np.int64),
            "label": np.full(n, -1, dtype=np.int64),
            "sequence": [text[i * length : (i + 1) * length] for i in range(n)],
            "ref": rows["ref"].to_numpy(dtype=object),
            "alt": rows["alt"].to_numpy(dtype=object),
        }
    )


class VariantSteps:
    prepared_name = VARIANTS

    def chunk_rows(self, cell: Any) -> int:
        return max(256, WINDOW_BYTES // cell.model.context_length)

    def prepare(self, job: Any, d: Any) -> dict[str, Any]:
        pv = prepare_variant_set(job.split.variants, str(d))
        record = record_for(to_path(pv.path).read_bytes(), pv.num_variants)
        return {
            "num_examples": pv.num_variants,
            "num_records": pv.num_records,
            "skipped": pv.skipped,
            "columns": list(pv.columns),
            "row_group_size": pv.row_group_size,
            "files": {VARIANTS: record},
        }

    def shard_columns(self, cell: Any) -> list[str]:
        return READ_COLUMNS

    def shard_frame(self, cell: Any, prepared: Any, rows: pd.DataFrame) -> pd.DataFrame:
        with ReferenceGenome(open_fasta(cell.split.variants.fasta, "variants[].fasta")) as genome:
            return windows_frame(rows, genome, cell.model.context_length)

    def finish(self, cell: Any, merged: pd.DataFrame, prepared: Any, d: Any):
        info = prepared.info
        frame = scores_frame(prepared.examples, tuple(info.get("columns", ())), merged)
        write_outputs(frame, str(d))
        frame.insert(0, "row_index", np.arange(len(frame), dtype=np.int64))
        extra: dict[str, Any] = {"num_records": int(info.get("num_records", len(frame)))}
        extra |= {f"num_skipped_{reason}": int(n) for reason, n in info.get("skipped", {}).items()}
        return frame, extra, []
