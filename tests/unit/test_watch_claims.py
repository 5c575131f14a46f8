"""Release on push by polling: a watched branch's new head is claimed once (slipway/source/watch.py)."""

from fakes import FakeS3
from slipway.source.watch import Watched, claim_new_head

W = Watched("https://git.example.com/team/orders.git", "main")


def test_a_new_head_is_claimed_once_and_the_next_new_head_again():
    s3 = FakeS3()
    assert claim_new_head(s3, "b", "slipway", W, "a" * 40)
    assert not claim_new_head(s3, "b", "slipway", W, "a" * 40)  # seen: nothing to release
    assert claim_new_head(s3, "b", "slipway", W, "b" * 40)
    assert not claim_new_head(s3, "b", "slipway", W, "b" * 40)


def test_branches_and_repositories_are_watched_apart():
    s3 = FakeS3()
    assert claim_new_head(s3, "b", "", W, "a" * 40)
    assert claim_new_head(s3, "b", "", Watched(W.repo_url, "release"), "a" * 40)
    assert claim_new_head(s3, "b", "", Watched("https://git.example.com/team/other.git", "main"), "a" * 40)


def test_a_watcher_that_read_before_another_recorded_loses_the_claim():
    """Two watchers see the same new head: the conditional write lets one start the release."""
    s3 = FakeS3()
    claim_new_head(s3, "b", "", W, "a" * 40)
    real_get = s3.get_object
    stale = real_get(Bucket="b", Key=f"watch/{W.key}.json")  # this watcher's read, before the other one writes
    stale_body = stale["Body"].read()
    assert claim_new_head(s3, "b", "", W, "b" * 40)  # the other watcher claims b

    class _Body:
        def read(self):
            return stale_body

    s3.get_object = lambda **kw: {"Body": _Body(), "ETag": stale["ETag"]}
    assert not claim_new_head(s3, "b", "", W, "b" * 40)
