"""`lightship lift`: the light-backbone workflow on the user's data as one command with a time
budget (lightship.lift.core; the rules in lightship.lift.race). ``lightship.lift(...)`` is the
Python entry point (lightship.api.lift)."""
