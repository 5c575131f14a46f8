"""The watch flow on a real repository: one new commit is released once; three quick pushes between two checks
release only the newest; nothing changed, nothing released (dry runs: the claims, not the release runs)."""

from __future__ import annotations


def test_watch_claims_each_new_head_once_and_only_the_newest_of_a_burst(prefect_api, app_repo):
    from conftest import git
    from flows.watch import watch

    repo = app_repo()
    repos = [{"repo_url": repo.url, "branch": "main"}]

    first = watch(repos=repos, dry_run=True)
    assert first == {f"{repo.url}@main": git(repo.path, "rev-parse", "HEAD")}
    assert watch(repos=repos, dry_run=True) == {}  # nothing pushed: nothing released

    for n in (2, 3, 4):  # a burst of pushes between two checks
        repo.write("src/app.py", (repo.path / "src" / "app.py").read_text() + f"\n# v{n}\n").commit(f"v{n}")
    burst = watch(repos=repos, dry_run=True)
    assert burst == {f"{repo.url}@main": git(repo.path, "rev-parse", "HEAD")}  # the newest only
    assert watch(repos=repos, dry_run=True) == {}
