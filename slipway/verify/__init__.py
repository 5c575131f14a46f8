"""How a version is judged: smoke checks (``lambda_checks``, ``http_checks``), synthetic ``traffic``, per-version
metrics (``lambda_metrics``, ``nginx_metrics``), CloudWatch ``alarms`` and the ``canary`` statistics that turn
samples into a verdict. Targets use these; nothing here knows about rollouts."""
