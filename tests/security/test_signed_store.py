"""A signed artifact store end to end: releases through a store block with a signing key (a Prefect Secret block)
sign their ledger entries, manifests and pointers; a ledger entry forged by someone who can write the bucket stops the
next release in one line naming the object, before anything is deployed."""

from __future__ import annotations

import json
import secrets


def test_a_release_through_a_signed_store_refuses_a_forged_ledger_entry(prefect_api, app_repo):
    import boto3
    from prefect.blocks.system import Secret
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import ArtifactStoreBlock
    from flows.release import release

    endpoint = prefect_api["env"]["AWS_ENDPOINT_URL"]
    Secret(value=secrets.token_hex(32)).save("slipway-signing-key", overwrite=True)
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url=endpoint))
    ArtifactStoreBlock(bucket=prefect_api["bucket"], prefix="signed", credentials=creds,
                       signing_key_block="slipway-signing-key").save("signed", overwrite=True)
    repo = app_repo()

    assert release(repo_url=repo.url, ref="v1", only=["dev"], store_block="signed", return_state=True).is_completed()

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    entries = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=prefect_api["bucket"], Prefix=f"signed/ledger/{repo.app}/dev/entries/")["Contents"])
    last = json.loads(s3.get_object(Bucket=prefect_api["bucket"], Key=entries[-1])["Body"].read())
    assert last["signature"].startswith("hmac-sha256:")
    forged_key = entries[-1][:-len("0000000000.json")] + f"{last['seq'] + 1:010d}.json"
    forged = {**{k: v for k, v in last.items() if k != "signature"}, "seq": last["seq"] + 1, "release_id": "forged-release"}
    s3.put_object(Bucket=prefect_api["bucket"], Key=forged_key, Body=json.dumps(forged).encode())

    state = release(repo_url=repo.url, ref="v1", only=["dev"], store_block="signed", return_state=True)

    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert f"ledger object s3://{prefect_api['bucket']}/{forged_key} was not written by Slipway: its signature is missing" in err.message
