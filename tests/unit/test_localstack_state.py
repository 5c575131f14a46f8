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


def test_a_port_whose_server_stopped_with_connections_in_time_wait_is_free_again():
    """`local down` then `up` keeps the ports: the stopped server's closed connections (TIME_WAIT) do not count."""
    import socket

    from slipway.local.stack import _port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection waits in TIME_WAIT on the port
    client.close()
    server.close()
    assert _port_free(port)
