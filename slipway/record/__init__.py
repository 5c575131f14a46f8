"""What is durable: the append-only ``ledger`` of every environment (the truth when Prefect is gone), feature
``flags``, the release ``report`` and the failure diagnosis (``diagnose``)."""
