"""Where a release comes from: cloning a pinned commit (``git``), running the repository's tests sandboxed
(``testrun``), and noticing new commits: by polling (``watch``) or by push webhooks (``webhook``)."""
