"""The two ways a run can end badly, each with its own exit code.

The CLI prints either as one line (no traceback): bad input exits 2, a run that
started and failed exits 1.
"""


class RecipeError(Exception):
    """Bad user input: a recipe, an override, a path or a name. Exit code 2."""

    exit_code = 2


class TrainingFailed(Exception):
    """A run that started and could not go on (non-finite loss, too many skips). Exit code 1."""

    exit_code = 1
