"""The one text-table helper (`plantcad_flows/tables.py`), on small hand-written tables."""

from __future__ import annotations

from plantcad_flows.tables import text_table


def test_columns_pad_to_the_widest_cell_and_the_rule_joins_dashes():
    lines = text_table(("model", "n"), [("a", "100"), ("longer", "")], rule="  ")
    assert lines == ["model   n", "------  ---", "a       100", "longer"]


def test_results_style_keeps_the_padding_of_the_last_column():
    lines = text_table(("m", "value"), [("x", "1")], sep=" | ", rule="-+-", rstrip=False)
    assert lines == ["m | value", "--+------", "x | 1    "]


def test_indent_goes_before_every_line_even_an_empty_row():
    assert text_table(("a", "b"), [("", "")], indent="  ") == ["  a  b", "  "]
