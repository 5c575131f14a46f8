"""Moving traffic, recorded: ``planning`` (which environments, in what order), ``staged`` (a staged deploy and a
rollback, each step in the ledger before it acts), ``progressive`` (canary and linear shifts with bakes) and
``preflight_account`` (read-only checks of the target account before anything moves)."""
