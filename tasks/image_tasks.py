"""The build-once stages of a container release: find the image under its commit's tag, or build and push it by
digest, and record its provenance in the artifact store."""

from __future__ import annotations

import platform

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import slipway
from slipway.artifact.image import build_image, image_tag, oci_labels
from slipway.artifact.registry import push_image, remote_digest
from slipway.core.models import ArtifactRef, ImageRef, Provenance
from slipway.source.git import Checkout
from slipway.spec.schema import Spec
from tasks.artifact_tasks import now_iso, release_id_for
from tasks.wiring import TRANSIENT_RETRIES, docker_client, open_store, registry_coordinates


@task(name="build-image", cache_policy=NO_CACHE)
def build_container_image(checkout: Checkout, spec: Spec, build_key: str) -> dict:
    logger = get_run_logger()
    art = spec.artifact
    labels = oci_labels(app=spec.app, commit=checkout.commit, ref=checkout.ref, repo=checkout.repo_url, spec_digest=spec.digest())
    local_tag = f"slipway/{spec.app}:{image_tag(checkout.commit, build_key)}"
    built = build_image(
        docker_client(), context=checkout.path / art.context, dockerfile=art.dockerfile, local_tag=local_tag, labels=labels,
        build_args=art.build_args, platform=art.platform, log=lambda line: logger.info("%s", line),
    )
    logger.info("built %s (%s)", local_tag, built.image_id)
    return {"image_id": built.image_id, "local_tag": local_tag, "tag": image_tag(checkout.commit, build_key), "labels": labels}


@task(name="find-pushed-image", **TRANSIENT_RETRIES)
def find_pushed_image(registry_block: str, app: str, tag: str) -> ImageRef | None:
    """The tag is derived from the commit and the build config, so an image already under it was built from
    them: reuse it rather than build again (a rebuild differs in its timestamps and would be refused)."""
    registry, name, auth = registry_coordinates(registry_block, app)
    digest = remote_digest(registry, name, tag, auth)
    if digest:
        get_run_logger().info("image %s/%s:%s already pushed (%s): reused, not rebuilt", registry, name, tag, digest)
        return ImageRef(repository=f"{registry}/{name}", tag=tag, digest=digest)
    return None


@task(name="push-image", **TRANSIENT_RETRIES)
def push_container_image(registry_block: str, app: str, built: dict) -> ImageRef:
    logger = get_run_logger()
    registry, name, auth = registry_coordinates(registry_block, app)
    ref = push_image(docker_client(), built["image_id"], registry=registry, name=name, tag=built["tag"], auth=auth,
                     log=lambda line: logger.info("%s", line))
    logger.info("pushed %s", ref.pinned)
    return ref


@task(name="record-image", **TRANSIENT_RETRIES)
def record_image(store_block: str, image: ImageRef, checkout: Checkout, spec: Spec, build_key: str, tests: dict) -> ArtifactRef:
    store, _ = open_store(store_block)
    digest = image.digest.removeprefix("sha256:")
    provenance = Provenance(
        app=spec.app, release_id=release_id_for(checkout.commit, digest), artifact_sha256=digest, artifact_size=0,
        unzipped_size=0, file_count=0, commit=checkout.commit, commit_subject=checkout.subject, committed_at=checkout.committed_at, ref=checkout.ref,
        repo=checkout.repo_url, spec_digest=spec.digest(), build_key=build_key, runtime="container",
        handler=spec.artifact.dockerfile, builder={"slipway": slipway.__version__, "python": platform.python_version()},
        tests=tests, built_at=now_iso(), image=image.pinned,
    )
    ref = store.record_image(provenance, image)
    get_run_logger().info("recorded %s as release %s", image.pinned, ref.release_id)
    return ref
