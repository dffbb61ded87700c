"""Run-time failures that are the user's to act on (a diverging loss, a full disk, a run folder in use): the entry
points report them in one line, like bad input (:func:`tcurseg.cli.user_errors`). Torch-free, so the entry points can
name them before torch loads."""


class RunError(RuntimeError):
    """A failure of a run that one line explains."""


class CheckpointWriteError(RunError):
    """A checkpoint or model file could not be written (a full disk, a lost mount); the files before it are intact."""


class RunFolderBusy(RunError):
    """Another live process trains in this run folder."""
