from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from transforms.cleanse import Cleanse, CountryCode, Email, cleanse_table
from transforms.features import AddFeatures, add_features


def test_email_and_country_rules_null_and_count():
    table = pa.table(
        {
            "email": [" A.B@Example.COM ", "not-an-email", None, "a@b", "x\u00a0y@z.io", "12"],
            "country": ["us", " de ", "USA", None, "U1", ""],
        }
    )
    out, counts = cleanse_table(table, (Email("email"), CountryCode("country")))
    assert out.column("email").to_pylist() == ["a.b@example.com", None, None, None, None, None]
    assert out.column("country").to_pylist() == ["US", "DE", None, None, None, None]
    assert counts == {"invalid_email": 4, "invalid_country": 3}


def test_features_from_utc_time():
    ts = pa.array(
        [datetime(2024, 3, 2, 23, 30, tzinfo=timezone.utc), datetime(2024, 3, 4, 0, 5, tzinfo=timezone.utc)],
        pa.timestamp("us", tz="UTC"),
    )
    table = pa.table({"ts": ts, "email": ["a@shop.example.org", None], "extras": [None, None]})
    out = add_features(table, "ts", "email")
    assert out.column_names == ["ts", "email", "email_domain", "hour_of_day", "day_of_week", "is_weekend", "extras"]
    assert out.column("email_domain").to_pylist() == ["shop.example.org", None]
    assert out.column("hour_of_day").to_pylist() == [23, 0]
    assert out.column("day_of_week").to_pylist() == [5, 0]  # Saturday, Monday
    assert out.column("is_weekend").to_pylist() == [True, False]


def test_cleanse_and_features_composites(pipeline):
    table = pa.table(
        {
            "ts": pa.array([0], pa.timestamp("us", tz="UTC")),
            "email": ["bad"],
            "country": ["fr"],
            "extras": pa.array([None], pa.string()),
        }
    )
    with pipeline() as p:
        out = p | beam.Create([table]) | "C" >> Cleanse()
        feats = out["cleaned"] | AddFeatures()
        assert_that(out["stats"], equal_to([{"quality.invalid_email": 1, "quality.invalid_country": 0}]), "stats")
        assert_that(
            feats | beam.Map(lambda t: (t.column("country")[0].as_py(), t.column("day_of_week")[0].as_py())),
            equal_to([("FR", 3)]),  # 1970-01-01 was a Thursday
            "feats",
        )


def test_bad_config_fails_at_construction():
    with pytest.raises(ValueError):
        Cleanse(())
    with pytest.raises(ValueError):
        AddFeatures(ts_field="")
