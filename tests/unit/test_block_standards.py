"""Standards every Slipway block keeps (prefect-aws has the same kind of test): a user reading the block in the
UI or the docs sees a title and a description on every field, and the class docstring shows how to load it."""

import inspect
import re

import pytest
from prefect.blocks.core import Block
from pydantic import SecretStr

import blocks

# what `prefect block register -m blocks` finds (inspect.getmembers): the package imports each block module lazily
BLOCKS = [obj for _, obj in inspect.getmembers(blocks) if inspect.isclass(obj) and issubclass(obj, Block)]
SECRET_NAME = re.compile(r"(password|token|secret|api_key)", re.I)


def test_the_blocks_package_exports_every_block_type():
    assert {b.__name__ for b in BLOCKS} == {"ArtifactStoreBlock", "DockerHostBlock", "EcsTargetBlock", "FreezeWindowsBlock", "LambdaTargetBlock", "PrometheusBlock",
                                            "RegistryBlock"}


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_every_field_has_a_title_and_a_description(block):
    missing = [name for name, field in block.model_fields.items() if not field.title or not field.description]
    assert missing == []


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_the_docstring_shows_how_to_load_the_block(block):
    doc = inspect.getdoc(block) or ""
    assert "Example" in doc and f'{block.__name__}.load("' in doc


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_the_block_type_has_a_name_a_hyphenated_slug_and_a_description(block):
    assert block._block_type_name and block._description
    assert re.fullmatch(r"slipway-[a-z0-9]+(-[a-z0-9]+)*", block._block_type_slug)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.__name__)
def test_secret_looking_fields_are_secret_strings(block):
    def secret_typed(annotation) -> bool:
        return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())

    leaking = [name for name, field in block.model_fields.items() if SECRET_NAME.search(name) and not secret_typed(field.annotation)]
    assert leaking == []


def test_a_lambda_release_imports_no_container_or_policy_block():
    """Prefect builds a block class's schema when the class is defined (tens of ms each): the release flow of a Lambda
    app must not pay for the blocks it does not use."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = "import json, sys, flows.release, tasks.wiring; print(json.dumps(sorted(m for m in sys.modules if m.startswith('blocks'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert json.loads(out.stdout) == ["blocks", "blocks.slipway_blocks"]


def test_the_test_stack_serves_outside_the_demo_stable_ports():
    from blocks import DockerHostBlock, parse_port_range
    from conftest import TEST_STABLE_PORTS

    tests, demo = parse_port_range(TEST_STABLE_PORTS), parse_port_range(DockerHostBlock.model_fields["stable_ports"].default)
    assert tests[0] > demo[1] or tests[1] < demo[0]
