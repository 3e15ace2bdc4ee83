"""bench/guidelines.py compares shapes of computation at (nearly) equal multiply-adds: check that it does."""

import pytest

from bench.guidelines import BLOCKS, G1_CHANNELS, G2_CHANNELS, MULTIPLIERS, SIZE, networks
from bigbatch.trainer.models.complexity import count_macs_of


@pytest.fixture(scope="module")
def macs():
    return {table: {row: [count_macs_of(net, (1, c_in, SIZE, SIZE)) for net, c_in in cells]
                    for row, cells in rows.items()} for table, rows in networks().items()}


def test_g1_and_g2_do_the_multiply_adds_of_their_definition(macs):
    g1, g2 = (macs[t] for t in list(macs)[:2])
    for ratio, (c1, c2) in G1_CHANNELS.items():  # two 1x1 convolutions c1 -> c2 -> c1 per block
        assert g1[ratio] == [BLOCKS * 2 * (c1 * k) * (c2 * k) * SIZE * SIZE for k in MULTIPLIERS]
    for g, c in G2_CHANNELS.items():  # one 1x1 group convolution c -> c per block
        assert g2[f"g={g}"] == [BLOCKS * (c * k) * (c * k) // g * SIZE * SIZE for k in MULTIPLIERS]


def test_every_row_of_a_table_is_within_6_percent_of_its_first_rows_multiply_adds(macs):
    for table, rows in macs.items():
        first = next(iter(rows.values()))
        for row, values in rows.items():
            assert all(abs(v / f - 1) <= 0.06 for v, f in zip(values, first, strict=True)), (table, row)
