"""ECR login tokens become a registry host and RegistryAuth whose password never shows."""

from __future__ import annotations

import base64

import boto3
import pytest
from moto import mock_aws
from pydantic import SecretStr

from slipway.core.errors import PublishError
from slipway.artifact.registry import RegistryAuth, ecr_auth, remote_digest


def test_ecr_auth_gives_the_registry_host_and_a_hidden_password():
    with mock_aws():
        client = boto3.client("ecr", region_name="us-east-1")
        token = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        host, auth = ecr_auth(client)

    assert host == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert auth.username == "AWS"
    assert isinstance(auth.password, SecretStr)
    assert f"AWS:{auth.password.get_secret_value()}" == base64.b64decode(token).decode()
    assert auth.password.get_secret_value() not in repr(auth) + str(auth)


def test_registry_auth_repr_masks_the_password():
    assert repr(RegistryAuth("ci", SecretStr("pa55"))) == "RegistryAuth(username='ci', password=SecretStr('**********'))"


@pytest.mark.parametrize(
    ("registry", "name", "tag", "what"),
    [("https://r.example", "app", "t", "registry"), ("r.example", "App", "t", "repository name"), ("r.example", "app", "-t", "tag")],
)
def test_invalid_image_names_are_refused_before_any_request(registry, name, tag, what):
    with pytest.raises(PublishError) as caught:
        remote_digest(registry, name, tag)
    assert caught.value.ref == "invalid-image-name"
    assert str(caught.value).startswith(f"invalid image {what} ")
