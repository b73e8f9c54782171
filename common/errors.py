"""Errors raised by `common` for bad input, each naming the file or field and what was expected."""


class DatasetError(ValueError):
    """A file or folder does not hold what its reader expects.

    The message names the path (and the field, where there is one) and what was expected, so that
    one line tells the user what to fix.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CheckpointError(DatasetError):
    """A weights or checkpoint file (or folder) that cannot be read: missing, truncated, a pickle.

    Same one-line form as DatasetError: `<path>: <what is wrong and what was expected>`.
    """
