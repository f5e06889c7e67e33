"""Errors a user can act on. Each formats as one line naming the field and its allowed range."""


class AnalogAttnError(Exception):
    """Base class for errors reported to the user as one line (CLI exit code 2)."""


class ParameterError(AnalogAttnError, ValueError):
    """A parameter value is outside its allowed range or of the wrong kind."""

    def __init__(self, field: str, value, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        if len(shown) > 80:  # one readable line, even for a long list or string
            shown = shown[:77] + "..."
        super().__init__(f"{field} = {shown} is not allowed (allowed: {allowed})")


class DesignFileError(AnalogAttnError):
    """A design file cannot be read or names keys that do not exist."""


class SimulatorError(AnalogAttnError):
    """ngspice is missing or cannot be loaded."""
