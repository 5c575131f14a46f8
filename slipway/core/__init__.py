"""The shared kernel every other folder may use: errors and their declared references, the models passed between
stages, AWS client construction and error translation, Slipway's home directory, and the scrubbed environment of
child processes. Nothing here imports another slipway folder."""
