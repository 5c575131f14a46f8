"""The shared kernel every other folder may use: errors and their declared references, the models passed between
stages, AWS client construction and error translation, Slipway's home directory, the scrubbed environment of child
processes, the sandbox repository code runs in (``sandbox``), content manifests of cache entries (``manifest``) and
HMAC signatures of stored records (``signing``). Nothing here imports another slipway folder."""
