"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class InputError(ValueError):
    """Bad input from a user: a file, a YAML spec, an argument or data (NaN, wrong shape).

    It subclasses ``ValueError`` so library callers can catch the usual exception; the CLI catches
    this class only, so bugs still show a traceback.
    """
