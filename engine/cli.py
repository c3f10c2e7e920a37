"""The command lines' error policy: which exceptions are the user's input, printed as one line with exit code 2."""

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)  # bad input: configs, checkpoints, data folders


def error_line(e):
    """One-line message of a user error (KeyError's str() would add quotes around the whole message)."""
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)
