"""The read-only side of the CLI: the ledger view folds the same heads the ledger checkpoints, and the store block
is read without Prefect only in its plain form."""

from deployments.block_reader import _plain_session_and_params
from deployments.runner import ledger_view
from fakes import FakeS3, FakeTarget, artifact
from slipway.record.ledger import Ledger
from slipway.rollout import staged


def test_the_heads_folded_from_the_entries_are_the_ledgers_own():
    ledger = Ledger(FakeS3(), "bucket", "slipway")
    for env in ("dev", "prod"):
        ctx = staged.EnvContext(ledger=ledger, app="app", environment=env, target=FakeTarget(), run_id="run-A")
        for release_id in ("r1-aaaa", "r2-bbbb"):
            art = artifact(release_id)
            deployed = staged.publish(ctx, art)
            staged.verify(ctx, art, deployed.version, staged.shift_traffic(ctx, art, deployed))
    entries, heads = ledger_view(ledger, "app", None)
    assert heads == {env: ledger.head("app", env) for env in ("dev", "prod")}
    assert len(entries) == 12 and entries[0].at >= entries[-1].at
    only_dev, dev_heads = ledger_view(ledger, "app", "dev")
    assert set(dev_heads) == {"dev"} and {e.environment for e in only_dev} == {"dev"}


def test_only_a_plain_credentials_block_is_read_without_prefect():
    plain = {"aws_access_key_id": "k", "aws_secret_access_key": "s", "region_name": "us-east-1",
             "aws_client_parameters": {"endpoint_url": "http://127.0.0.1:9", "use_ssl": True, "verify": None, "config": None}}
    session, params = _plain_session_and_params(plain)
    assert params == {"endpoint_url": "http://127.0.0.1:9", "use_ssl": True}
    assert session.get_credentials().secret_key == "s"
    assert _plain_session_and_params({**plain, "assume_role_arn": "arn:aws:iam::1:role/x"}) is None
    assert _plain_session_and_params({**plain, "aws_client_parameters": {"config": {"read_timeout": 5}}}) is None
