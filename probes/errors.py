"""The one error a user can hit when capture cannot start; its message is one line saying what to do."""


class CaptureUnavailable(RuntimeError):
    """Capture cannot run on this machine; str(exc) is a single sentence naming the fix."""
