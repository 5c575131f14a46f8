"""Clients made from an AwsCredentials block: the block's endpoint and timeouts, Slipway's retries."""

from __future__ import annotations

import pytest


def _clients(config, read_timeout: float = 20):
    from botocore.config import Config
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks.slipway_blocks import aws_clients

    if config == "object":
        config = Config(read_timeout=7, retries={"max_attempts": 1})
    creds = AwsCredentials(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url="http://127.0.0.1:9", config=config))
    (client,) = aws_clients(creds, "lambda", read_timeout=read_timeout)
    return client.meta


@pytest.mark.parametrize(("config", "read", "connect"), [
    (None, 20, 10),                                           # Slipway's defaults (the caller's read timeout)
    ({"read_timeout": 3, "connect_timeout": 2}, 3, 2),        # the block's timeouts win
    ({"retries": {"max_attempts": 1}}, 20, 10),               # a config without timeouts changes nothing
    ("object", 7, 10),                                        # a botocore Config: only what was set counts
])
def test_the_blocks_timeouts_are_honoured_and_the_retries_stay_slipways(config, read, connect):
    meta = _clients(config)
    assert (meta.config.read_timeout, meta.config.connect_timeout) == (read, connect)
    assert meta.config.retries["mode"] == "standard" and meta.config.retries["total_max_attempts"] == 6
    assert meta.endpoint_url == "http://127.0.0.1:9"


def _creds(secret: str = "b", endpoint: str = "http://127.0.0.1:9"):
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    return AwsCredentials(aws_access_key_id="a", aws_secret_access_key=secret, region_name="us-east-1",
                          aws_client_parameters=AwsClientParameters(endpoint_url=endpoint))


def test_clients_are_built_once_per_block_values_and_settings():
    from blocks.slipway_blocks import aws_clients

    s3, lam = aws_clients(_creds(), "s3", "lambda")
    assert aws_clients(_creds(), "lambda", "s3") == [lam, s3]  # an equal block (loaded again): the same clients
    assert aws_clients(_creds(), "lambda", read_timeout=5)[0] is not lam  # other settings: another client
    assert aws_clients(_creds(secret="rotated"), "lambda")[0] is not lam  # a changed secret: never the old client
    other = aws_clients(_creds(endpoint="http://127.0.0.1:10"), "lambda")[0]
    assert other is not lam and other.meta.endpoint_url == "http://127.0.0.1:10"


def test_the_client_cache_key_holds_no_secret_in_clear():
    from blocks import slipway_blocks

    slipway_blocks.aws_clients(_creds(secret="s3cr3t-value"), "sts")
    assert not any("s3cr3t-value" in repr(key) for key in slipway_blocks._CLIENTS)
