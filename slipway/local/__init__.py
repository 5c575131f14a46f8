"""The embedded local stack: a real Prefect server plus a local AWS endpoint (``aws``: moto, extended where it
falls short) managed by ``stack``, and the ``demo`` that ``make demo`` runs on it. Needs the ``local`` extra."""
