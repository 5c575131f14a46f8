"""`make demo` runs slipway/local/demo.py from the repository: the examples and the base-image script it uses exist
where it looks (a module moved to another folder once looked one level too high)."""

from slipway.local import demo


def test_the_demo_finds_the_examples_and_the_base_image_script():
    assert (demo.EXAMPLES / "hello-lambda" / "slipway.yaml").is_file()
    assert (demo.EXAMPLES / "hello-service" / "Dockerfile").is_file()
    assert (demo.ROOT / ".ci" / "base-image.sh").is_file()
