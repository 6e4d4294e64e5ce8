"""User-facing errors: each carries one line that tells the user what went wrong and what to do."""


class MagicIDError(Exception):
    """An error whose message is shown to the user as is (CLI: one line on stderr; UI: an error toast)."""


class InvalidImageError(MagicIDError):
    """A file that is not a readable image, or one too large or too small to use."""


class NoFaceError(MagicIDError):
    """An image in which a face was required but none was found."""


class MissingWeightsError(MagicIDError):
    """Model weights that are not on disk and cannot be downloaded (offline, or no such repo)."""


class LayoutError(MagicIDError):
    """A layout that cannot be generated: an identity without a person, a person off the canvas, ..."""


class TrainingDataError(MagicIDError):
    """A training data folder or config that cannot be used (missing, empty, or built with another face model)."""


class InvalidSettingError(MagicIDError):
    """A generation setting outside what the model supports (size, steps, scales, number of identities)."""
