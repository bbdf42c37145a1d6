"""Text tables for a terminal: columns padded to their widest cell, one helper for every table the
house prints (results, pivots, leaderboards, history, tasks, grid plans and status).

Pure strings in, lines out; the callers decide the columns and how each value is written.
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    sep: str = "  ",
    rule: str | None = None,
    indent: str = "",
    rstrip: bool = True,
) -> list[str]:
    """The table's lines: the header, a rule of dashes under it when `rule` names the string that
    joins the dashes (`"  "`, `"-+-"`), then the rows; each column padded to its widest cell.

    `rstrip` drops the padding after the last column; `indent` goes before every line."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        text = sep.join(v.ljust(w) for v, w in zip(values, widths))
        return indent + (text.rstrip() if rstrip else text)

    lines = [line(header)]
    if rule is not None:
        lines.append(indent + rule.join("-" * w for w in widths))
    return lines + [line(r) for r in rows]
