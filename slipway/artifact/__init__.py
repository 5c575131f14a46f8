"""What is built once and promoted unchanged: the reproducible Lambda zip (``lambda_zip``) and its offline
``preflight``, the Docker image (``image``) and its ``registry``, and the immutable ``store`` that names every
artifact by its digest."""
