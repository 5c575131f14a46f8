"""Nothing in the repository points at files outside it (a reader of the code or the docs has only the repository)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The developers' notes live in a folder beside the repository (facts measured about the tools, a style
# guide); users do not have it. The pattern is assembled so that this file does not match itself.
SHARED = "shared"
OUTSIDE = re.compile(rf"(\.\./{SHARED}/|{SHARED}/facts/|{SHARED}/STYLE)")


def test_no_file_refers_to_the_shared_folder_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [f for f in files if (ROOT / f).is_file() and OUTSIDE.search((ROOT / f).read_text(errors="replace"))]
    assert offenders == []


def test_relative_links_in_the_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
