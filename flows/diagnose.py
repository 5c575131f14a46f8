"""The ``diagnose`` flow: why did the latest release of an app (in an environment) fail?

Reads the failure record the release left in the artifact store, classifies it (``slipway.record.diagnose``), and
publishes the diagnosis as the markdown artifact ``diagnosis-<app>``. The release flow runs it as a subflow at
the end of every failed release; ``slipway diagnose APP`` and ``prefect deployment run diagnose/diagnose`` run it
on demand.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows import links

from slipway.record.diagnose import FailureRecord, diagnosis_environment, diagnosis_view
from slipway.core.errors import InputError
from tasks.diagnose_tasks import read_failure_record
from tasks.deploy_tasks import read_heads


def artifact_key(app: str) -> str:
    return links.artifact_key("diagnosis", app)


@flow(name="diagnose", flow_run_name="diagnose {app}")
def diagnose(app: str, environment: str | None = None, record_key: str | None = None, store_block: str = "default") -> dict:
    """The failing stage and check with its evidence, the classification and its reasoning, the diff against the last
    verified release, and the next action."""
    found = read_failure_record(store_block, app, environment, record_key)
    if found is None:
        where = f"{app}/{environment}" if environment else app
        raise InputError(
            f"no failed release of {where} is on record",
            hint="diagnose reads the record a failed release leaves in the artifact store; `slipway history APP` shows what ran",
            ref="nothing-to-diagnose",
        )
    key, data = found
    record = FailureRecord.model_validate(data)
    env = diagnosis_environment(record)
    view = diagnosis_view(record, key, read_heads(store_block, app, [env])[env] if env else None)
    create_markdown_artifact(key=artifact_key(app), markdown=view.pop("markdown"),
                             description=f"Why release {record.release_id or '(not built)'} of {app} failed: {view['title']}")
    get_run_logger().info("%s", view["text"])
    return view


__all__ = ["diagnose", "artifact_key"]
