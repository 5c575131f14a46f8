"""Local stack bookkeeping that needs no servers: never signal a process that is not ours."""

import subprocess
import sys
import time

from slipway.local import stack as localstack

AWS = next(c for c in localstack.COMPONENTS if c.name == "aws")


def test_a_process_is_ours_only_if_its_command_line_names_the_component_and_its_port():
    # argv the way `up` starts the local AWS; the sleeping program stands in for the server
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "-m", "slipway.local.aws", "--host", "127.0.0.1",
                             "--port", "4999", "--work-dir", "/x"])
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd (a fork briefly shows the parent's argv)
        while "slipway.local.aws" not in (localstack._cmdline(proc.pid) or "") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert localstack._alive(proc.pid, localstack._marker(AWS, 4999)) is True
        assert localstack._alive(proc.pid, localstack._marker(AWS, 499)) is False  # another stack's port
        prefect = next(c for c in localstack.COMPONENTS if c.name == "prefect")
        assert localstack._alive(proc.pid, localstack._marker(prefect, 4999)) is False
    finally:
        proc.kill()
        proc.wait()
    assert localstack._alive(proc.pid, localstack._marker(AWS, 4999)) is False


def test_status_of_a_stack_that_never_ran_is_not_running(tmp_path):
    info = localstack.status(tmp_path)
    assert info["running"] is False and info["env"] == {}


def test_down_of_a_stack_that_never_ran_stops_nothing(tmp_path):
    assert localstack.down(tmp_path)["stopped"] == []
