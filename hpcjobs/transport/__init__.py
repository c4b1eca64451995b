"""Transports: the only place where hpcjobs runs processes or talks to a remote host."""

from hpcjobs.transport.base import CommandResult, Transport, TransportStats

__all__ = ["CommandResult", "Transport", "TransportStats"]
