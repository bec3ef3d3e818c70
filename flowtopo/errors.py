"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from collections.abc import Callable


class InputError(ValueError):
    """Bad input from a user: a file, a YAML spec, an argument or data (NaN, wrong shape).

    It subclasses ``ValueError`` so library callers can catch the usual exception; the CLI catches
    this class only, so bugs still show a traceback.
    """


def check_keywords(what: str, fn: Callable[..., object], given: dict,
                   fixed: tuple[str, ...] = ()) -> None:
    """Refuse keyword arguments ``fn`` does not take, naming the valid ones.

    Checked against ``fn``'s signature before the call, so a ``TypeError`` raised inside ``fn``
    (a bug) stays a traceback instead of being reported as the user's bad parameters.

    Args:
        what: how the error names the thing, e.g. ``"prior 'gmm'"``.
        fn: the callable (a class: its ``__init__``).
        given: the keyword arguments a user wrote.
        fixed: parameters the caller passes itself (not the user's to give).

    Raises:
        InputError: an unknown keyword, or a required one missing.

    """
    import inspect

    params = {n: p for n, p in inspect.signature(fn).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in fixed}
    valid = ", ".join(params) or "none"
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise InputError(f"{what}: bad parameters: unknown {', '.join(map(repr, unknown))}; "
                         f"valid: {valid}")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in given]
    if missing:
        raise InputError(f"{what}: bad parameters: missing {', '.join(map(repr, missing))}; "
                         f"valid: {valid}")
