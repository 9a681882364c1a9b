"""The README's supported-layer table is the registry's."""

from tests.readme_table import README, current


def test_layer_table_is_current():
    assert README.read_text() == current(), "README table is stale: run `python -m tests.readme_table`"
