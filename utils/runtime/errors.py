"""The one kind of error a user causes: a setting or an input that cannot work, said in one line."""


class UserError(ValueError):
    """A user-facing configuration mistake; the CLI prints its message on one line."""
