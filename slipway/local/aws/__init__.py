"""The embedded local AWS endpoint: moto for S3, Lambda, IAM, STS and CloudWatch, plus a real Lambda Invoke."""

from slipway.local.aws.server import LocalAws

__all__ = ["LocalAws"]
