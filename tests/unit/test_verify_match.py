from slipway.verify.lambda_checks import subset_mismatch


def test_subset_of_a_proxy_reply_matches():
    reply = {"statusCode": 200, "body": '{"ok": true, "version": "1"}', "headers": {}}
    assert subset_mismatch({"statusCode": 200, "body": {"ok": True}}, reply) is None


def test_status_mismatch_names_the_field():
    assert subset_mismatch({"statusCode": 200}, {"statusCode": 500}) == "statusCode: expected 200, got 500"


def test_missing_key_is_reported():
    assert subset_mismatch({"body": {"ok": True}}, {"body": "{}"}) == "body.ok: missing (expected true)"


def test_non_json_body_is_reported():
    assert subset_mismatch({"body": {"ok": True}}, {"body": "oops"}) == "body is not JSON: 'oops'"


def test_lists_match_by_prefix():
    assert subset_mismatch([1, 2], [1, 2, 3]) is None
    assert subset_mismatch([1, 3], [1, 2]) == "reply[1]: expected 3, got 2"
