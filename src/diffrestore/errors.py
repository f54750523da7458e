"""One error type for problems a user can fix (bad file, bad option).

The CLI prints its message as one line and exits 2; library callers can catch it.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line, exit code 2."""
