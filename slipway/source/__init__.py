"""Where a release comes from: cloning a pinned commit (``git``) and running the repository's tests
(``testrun``)."""
