"""The Prefect UI in a real browser: a finished release run and its release report, rendered by headless Chromium.

The session's local stack serves the UI from the same Prefect server the flows report to. A release runs in this
process; Chromium (``/usr/bin/chromium``, driven by ``tests/browser.py``) then loads the pages a user opens: the run
link the CLI prints (``ui_url_for_run``), the release-report artifact, and the run's Artifacts tab. Screenshots are
kept under the test's ``tmp_path`` and, if ``SLIPWAY_TEST_ARTIFACTS`` names a directory, copied there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import browser

pytestmark = [pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))]


def read_run_and_report(flow_run_id, key: str):
    """The flow run and its (single) artifact under ``key``, through the Prefect client."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])))
            return run, artifacts

    run, artifacts = asyncio.run(read())
    assert len(artifacts) == 1, f"expected one {key!r} artifact of run {flow_run_id}, got {[a.key for a in artifacts]}"
    return run, artifacts[0]


def keep(shots: list[Path], test_name: str) -> list[Path]:
    """Copy the screenshots to $SLIPWAY_TEST_ARTIFACTS/<test name>/ when that is set; return where they are kept."""
    target = os.environ.get("SLIPWAY_TEST_ARTIFACTS")
    if not target:
        return shots
    out = Path(target) / test_name
    out.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(shot, out / shot.name)) for shot in shots]


def test_the_prefect_ui_renders_a_finished_release_and_its_report(prefect_api, app_repo, tmp_path, request, capsys):
    from deployments.runner import ui_url_for_run
    from flows.release import release

    api_url = prefect_api["env"]["PREFECT_API_URL"]
    ui_url = prefect_api["ui_url"]

    # The UI is served by the session's server and is configured with that server's API (else pages render empty).
    _, _, body = browser.fetch(f"{ui_url}/ui-settings")
    ui_settings = json.loads(body)
    assert ui_settings["api_url"] == api_url, f"the UI would call {ui_settings['api_url']}, the server is {api_url}"

    repo = app_repo()
    state = release(return_state=True, repo_url=repo.url, ref="v1", only=["dev"])
    summary = state.result(raise_on_failure=False)
    assert state.is_completed(), summary
    release_id = summary["release_id"]
    flow_run_id = state.state_details.flow_run_id
    run, report = read_run_and_report(flow_run_id, f"release-{repo.app}")
    assert release_id in str(report.data)

    run_url = ui_url_for_run(flow_run_id)
    assert run_url == f"{ui_url}/runs/flow-run/{flow_run_id}"
    status, content_type, _ = browser.fetch(run_url, accept="text/html")  # a deep link: HTML only when asked for
    assert (status, content_type.split(";")[0]) == (200, "text/html")

    artifact_url = f"{ui_url}/artifacts/artifact/{report.id}"
    dev_row = ["dev", "live", release_id, "1", "verified"]
    # The v2 UI honours ?tab=Artifacts on a run's page; v1 resets it to Logs while the run loads.
    v2_base = ui_settings.get("v2_base_url", "/v2").rstrip("/") if "v2" in ui_settings.get("available_uis", []) else None
    tab_url = f"{ui_url}{v2_base}/runs/flow-run/{flow_run_id}?tab=Artifacts" if v2_base else None
    wanted = {  # name: (url, rendered enough)
        "flow-run": (run_url, lambda p: f"Flow Run: {run.name}" in p.text and "state--completed" in p.dom),
        "release-report": (artifact_url, lambda p: dev_row in p.rows()),
        "flow-run-artifacts": (tab_url, lambda p: f"release-{repo.app}" in p.text),
    }
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:  # one Chromium per page, side by side
        futures = {name: pool.submit(browser.render_until, url, ready, work_dir=tmp_path, name=name)
                   for name, (url, ready) in wanted.items() if url}
        pages = {name: future.result() for name, future in futures.items()}
    browser_seconds = time.monotonic() - started

    # 1. The link the CLI prints: the run (its name in the page title), with a Completed state badge.
    run_page = pages["flow-run"]
    assert f"Flow Run: {run.name}" in run_page.text and "state--completed" in run_page.dom, run_page.describe()

    # 2. The release report, rendered from its markdown: heading, and the dev row of the environments table as cells.
    report_page = pages["release-report"]
    assert re.search(rf"Release {re.escape(release_id)} of {re.escape(repo.app)} ?: SUCCEEDED", report_page.text), report_page.describe()
    assert ["environment", "outcome", "live release", "version", "detail"] in report_page.rows(), report_page.describe()
    assert dev_row in report_page.rows(), report_page.describe()
    assert "| dev |" not in report_page.text, "the markdown table was shown raw, not rendered"

    # 3. The run's Artifacts tab lists the report, with its description.
    if "flow-run-artifacts" in pages:
        tab_page = pages["flow-run-artifacts"]
        assert f"release-{repo.app}" in tab_page.text and f"Release {release_id} of {repo.app}" in tab_page.text, tab_page.describe()

    shots = [p.screenshot for p in pages.values()]
    assert all(shot is not None and shot.stat().st_size > 10_000 for shot in shots), [p.describe(200) for p in pages.values()]
    kept = keep(shots, request.node.name)
    with capsys.disabled():  # shown even when the test passes under -q
        print(f"\nUI screenshots ({len(pages)} pages rendered side by side in {browser_seconds:.1f} s: "
              + ", ".join(f"{name} {p.seconds:.1f} s/{p.attempts} try" for name, p in pages.items()) + "):")
        for path in shots:
            print(f"  {path}")
        if kept != shots:
            print(f"  copied to {kept[0].parent}")
