"""The one exception type the command line turns into a one-line message and (mostly) exit status 2."""


class AsrError(Exception):
    """A problem with the user's input (file, config, option), reported without a traceback.

    The message should name the thing at fault and the problem, e.g.
    ``"clip.wav: not a readable audio file (Format not recognised)"``.
    """

    exit_status = 2


class ConfigError(AsrError):
    pass
