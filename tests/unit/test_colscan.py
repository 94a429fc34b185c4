"""The compiled column passes refuse buffers that do not fit, instead of reading past them.

What each pass computes is tested where it is used, against its numpy/Arrow twin
(test_profile, test_records, test_validate)."""

import numpy as np
import pytest

from transforms import colscan


@pytest.fixture
def native():
    if not colscan.compiled():
        pytest.fail("transforms/_colscan.c was not built: is a C compiler installed?")
    return colscan.native


DATA = np.frombuffer(b"abcdefgh", np.uint8)
GOOD = np.array([0, 4, 8], np.int64)


@pytest.mark.parametrize(
    "offsets",
    [
        np.array([0, 4, 9], np.int64),
        np.array([0, 4, 2], np.int64),
        np.array([-1, 4, 8], np.int64),
        np.array([0, 4, 8], np.int32),
    ],
    ids=["past the data", "descending", "negative", "int32"],
)
def test_offsets_are_checked_by_every_pass(native, offsets):
    calls = [
        lambda: native.string_coupons(offsets, DATA, np.empty(2, np.uint64)),
        lambda: native.string_stats(offsets, DATA, None),
        lambda: native.hash_partitions(offsets, DATA, np.ones(256, np.uint64), 8, np.empty(2, np.int64)),
        lambda: native.iso_micros(offsets, DATA, np.ones(2, np.uint8), np.empty(2, np.int64), np.empty(2, np.uint8)),
        lambda: native.json_quote(offsets, DATA, None),
        lambda: native.json_rows([(offsets, DATA, None, 0)], [b"{", b"}"]),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="offsets must be n \\+ 1 ascending int64s inside the data"):
            call()


def test_other_buffers_must_fit(native):
    with pytest.raises(ValueError, match="out must hold 16 bytes"):
        native.string_coupons(GOOD, DATA, np.empty(3, np.uint64))
    with pytest.raises(ValueError, match="8 bytes per value"):
        native.word_coupons(np.zeros(3, np.uint8), np.empty(3, np.uint8))
    with pytest.raises(ValueError, match="out must hold"):
        native.word_coupons(np.zeros(3, np.uint64), np.empty(2, np.uint64))
    with pytest.raises(ValueError, match="a mask must hold 2 bytes"):
        native.string_stats(GOOD, DATA, np.ones(3, np.uint8))
    with pytest.raises(ValueError, match="weights must hold 2048 bytes"):
        native.hash_partitions(GOOD, DATA, np.ones(255, np.uint64), 8, np.empty(2, np.int64))
    with pytest.raises(ValueError, match="partitions"):
        native.hash_partitions(GOOD, DATA, np.ones(256, np.uint64), 0, np.empty(2, np.int64))
    with pytest.raises(ValueError, match="handled must hold 2 bytes"):
        native.iso_micros(GOOD, DATA, np.ones(2, np.uint8), np.empty(2, np.int64), np.empty(1, np.uint8))
    with pytest.raises(ValueError, match="one literal more"):
        native.json_rows([(GOOD, DATA, None, 0)], [b"{"])
    with pytest.raises(ValueError, match="same rows"):
        native.json_rows([(GOOD, DATA, None, 0), (GOOD[:2], DATA, None, 0)], [b"{", b",", b"}"])
    with pytest.raises(ValueError, match="mode"):
        native.json_rows([(GOOD, DATA, None, 3)], [b"{", b"}"])
    with pytest.raises(TypeError, match="bytes"):
        native.json_rows([(GOOD, DATA, None, 0)], ["{", "}"])


def test_json_rows_writes_literals_values_and_nulls(native):
    offsets, data = native.json_rows(
        [(GOOD, DATA, None, 2), (GOOD, DATA, np.array([0, 1], np.uint8), 0)], [b'{"a":', b',"b":', b"}\n"]
    )
    assert bytes(data) == b'{"a":"abcd","b":null}\n{"a":"efgh","b":efgh}\n'
    assert np.frombuffer(offsets, np.int64).tolist() == [0, 22, 44]
    empty_offsets, empty = native.json_rows([], [b"{}"])
    assert bytes(empty) == b"" and np.frombuffer(empty_offsets, np.int64).tolist() == [0]
