"""Translation of botocore errors at the boundary, and which of them are worth a retry."""

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from slipway.core.aws import is_transient, translate
from slipway.core.errors import CredentialsError, DeployError


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_throttling_and_5xx_are_transient_but_access_denied_is_not():
    assert is_transient(client_error("ThrottlingException", 429))
    assert is_transient(client_error("Whatever", 503))
    assert is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert not is_transient(client_error("AccessDeniedException", 403))
    assert not is_transient(client_error("ResourceNotFoundException", 404))


def test_translated_errors_keep_the_code_and_the_transient_flag():
    err = translate(client_error("ServiceException", 500), DeployError, "publish a version", target="f")
    assert isinstance(err, DeployError) and err.transient
    assert str(err) == "could not publish a version: ServiceException: ServiceException happened (f)"
    assert err.evidence == {"aws_error_code": "ServiceException"}


def test_refused_and_missing_credentials_become_credentials_errors():
    refused = translate(client_error("UnrecognizedClientException", 403), DeployError, "create the function")
    assert isinstance(refused, CredentialsError) and refused.ref == "credentials-refused"
    assert not refused.transient
    missing = translate(NoCredentialsError(), DeployError, "create the function")
    assert isinstance(missing, CredentialsError) and missing.ref == "credentials-missing"
