"""Where a release runs, behind one small ``protocol.Target``: AWS Lambda versions and aliases (``aws_lambda``),
a Docker host with blue/green through nginx (``docker_host`` over ``docker_engine`` and ``nginx``) and Amazon
ECS services (``ecs``)."""
