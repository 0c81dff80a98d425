"""model/level_offsets.py: how P-frame level offsets (one, or a pattern) are read and written."""

import numpy as np
import pytest

from model import level_offsets as lo


def test_parse_reads_numbers_comma_lists_and_sequences_and_format_reads_back():
    assert lo.parse_level_offsets(-1) == (-1.0,)
    assert lo.parse_level_offsets(" -1.25, -1.25,-1.25 ,-0.25") == (-1.25, -1.25, -1.25, -0.25)
    assert lo.parse_level_offsets([0, 0.5]) == (0.0, 0.5)
    assert lo.format_level_offsets(lo.parse_level_offsets("-0")) == "0" and lo.format_level_offsets(lo.parse_level_offsets([-0.0])) == "0"
    assert lo.parse_level_offsets([np.int64(-1), np.float32(0.5)]) == (-1.0, 0.5)  # numpy scalars are numbers too
    for value in ((-1.0,), (-1.25, -1.25, -1.25, -0.25), (0.5, -3.0)):
        assert lo.parse_level_offsets(lo.format_level_offsets(value)) == value
        assert lo.parse_level_offsets(lo.format_level_offsets(value, signed=True)) == value
    assert lo.format_level_offsets((0.5, -1.0), signed=True) == "+0.5,-1"
    assert lo.level_offsets_json((-1.0,)) == -1.0 and lo.level_offsets_json((-1.0, 0.0)) == [-1.0, 0.0]


@pytest.mark.parametrize("bad", ["", "x", "-1,", "1,,2", "nan", "inf", float("inf"), None, True, [], [1, None], "1," * 64 + "1", np.array([1.0])])
def test_parse_refuses_what_is_not_a_list_of_finite_numbers(bad):
    with pytest.raises(ValueError, match="must be a finite number or a comma list of at most 64 of them"):
        lo.parse_level_offsets(bad)


def test_offset_at_cycles_from_the_first_p_frame():
    offsets = (-1.5, -1.5, -0.5)
    assert [lo.offset_at(offsets, k) for k in range(1, 8)] == [-1.5, -1.5, -0.5, -1.5, -1.5, -0.5, -1.5]
    with pytest.raises(ValueError, match="at least 1 frame after"):
        lo.offset_at(offsets, 0)
    assert lo.describe_level_offsets((-1.0,)) == "1 level below the I-frames"
    assert lo.describe_level_offsets((-1.5,)) == "1.5 levels below the I-frames"
    assert lo.describe_level_offsets((0.5,)) == "0.5 levels above the I-frames"
    assert "at levels -1,0 from the I-frames" in lo.describe_level_offsets((-1.0, 0.0))



def test_the_scripts_offset_is_the_given_one_or_the_default_cards_in_one_spelling():
    from model.bundle import DEFAULT_DIR, card_p_level_offset, given_or_card_p_level_offset, read_card

    assert given_or_card_p_level_offset("-1.0") == "-1" and given_or_card_p_level_offset("-1.50, 0") == "-1.5,0"
    assert given_or_card_p_level_offset("") == lo.format_level_offsets(card_p_level_offset(read_card(DEFAULT_DIR)))
    with pytest.raises(ValueError, match="must be a finite number"):
        given_or_card_p_level_offset("x")
