"""Kendall's tau-b against pairs counted by hand from its definition."""

import math

from bigbatch.trainer.search.ranking import kendall_tau


def test_same_order_is_1_reversed_is_minus_1_and_one_swap_of_four_is_two_thirds():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # 6 pairs, one discordant (the 2-3 swap): (5 - 1) / 6
    assert math.isclose(kendall_tau([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4]), 4 / 6)


def test_ties_count_in_neither_direction_as_in_tau_b_and_a_constant_side_has_no_tau():
    # pairs: (a,b) tied in x; (a,c), (b,c) concordant. tau-b = 2 / sqrt(2 untied in x * 3 untied in y)
    assert math.isclose(kendall_tau([1, 1, 2], [1, 2, 3]), 2 / math.sqrt(6))
    assert math.isnan(kendall_tau([0.5, 0.5, 0.5], [1, 2, 3]))
    assert math.isnan(kendall_tau([1], [2]))
