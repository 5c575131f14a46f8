"""``slipway.yaml``: the schema an app describes itself with (``schema``) and how a file becomes a ``Spec``
(``loading``: bounded, strict YAML; errors that name the key and the fix; checks against the checkout)."""
