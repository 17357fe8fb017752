"""paymux: a self-hostable payment platform with one API in front of many payment providers."""

__version__ = "0.1.0"
