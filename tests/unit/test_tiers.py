"""The tier rules of tests/tiers.py, run on a small test tree of their own with pytest's pytester."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]
CONFTEST = '''
import pytest
pytest_plugins = ["tiers"]

@pytest.fixture(scope="session")
def local_stack():
    raise AssertionError("a heavy fixture must never start in this test tree")
'''


@pytest.fixture
def tree(pytester):
    pytester.syspathinsert(TESTS)
    pytester.makeconftest(CONFTEST)
    return pytester


def run(tree, *args):
    return tree.runpytest_inprocess("-p", "no:cacheprovider", *args)


def test_the_marker_comes_from_the_folder(tree):
    tree.mkpydir("tests")
    (tree.path / "tests" / "unit").mkdir()
    (tree.path / "tests" / "unit" / "test_a.py").write_text("def test_a():\n    pass\n")
    (tree.path / "tests" / "integration").mkdir()
    (tree.path / "tests" / "integration" / "test_b.py").write_text("def test_b():\n    pass\n")
    run(tree, "-m", "unit").assert_outcomes(passed=1, deselected=1)
    run(tree, "-m", "integration").assert_outcomes(passed=1, deselected=1)


def test_a_unit_test_that_asks_for_the_local_stack_fails_at_collection(tree):
    (tree.path / "tests" / "unit").mkdir(parents=True)
    (tree.path / "tests" / "unit" / "test_heavy.py").write_text("def test_heavy(local_stack):\n    pass\n")
    result = run(tree)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unit tests may not start servers or engines: tests/unit/test_heavy.py::test_heavy uses local_stack*"])


def test_the_same_fixture_is_fine_in_a_heavier_tier(tree):
    (tree.path / "tests" / "flows").mkdir(parents=True)
    (tree.path / "tests" / "flows" / "test_ok.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef local_stack():\n    return {}\n\ndef test_ok(local_stack):\n    pass\n")
    run(tree, "-m", "flows and stack").assert_outcomes(passed=1)


def test_a_test_outside_any_tier_folder_is_refused(tree):
    (tree.path / "tests").mkdir()
    (tree.path / "tests" / "test_loose.py").write_text("def test_loose():\n    pass\n")
    result = run(tree)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tests outside a tier folder*test_loose.py::test_loose*"])
