"""The run page's schema drift section: what the report's drift holds, escaped, and a plain
message when the records fit their contract."""

from beam_pipelines.report_html import render_report


def test_drift_section_lists_undeclared_fields_kind_changes_and_absent_fields():
    drift = {
        "unknown_fields": {"promo<x>": {"records": 1234, "samples": ['{"promo<x>":"spring"}']}},
        "type_changes": {"amount": {"string": 7}},
        "missing_fields": {"email": 99},
    }
    page = render_report({"summary": {"pipeline": "events"}, "report": {"counts": {}, "drift": drift}})
    section = page[page.index('id="drift"') : page.index("</details>", page.index('id="drift"'))]
    assert "promo&lt;x&gt;" in section and "promo<x>" not in section
    assert "1,234" in section and "sent as string" in section and "absent or null" in section and "99" in section
    assert 'href="#drift"' in page


def test_no_drift_says_the_records_fit():
    page = render_report({"report": {"counts": {}}})
    assert "The records fit their contract." in page
