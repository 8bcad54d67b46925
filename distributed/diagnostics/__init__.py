"""Diagnostics: plugin base classes (and, as they are built, progress bars,
task streams and the other views of a running cluster).

>>> from distributed.diagnostics import SchedulerPlugin, WorkerPlugin, NannyPlugin
"""
from distributed.diagnostics.plugin import NannyPlugin, SchedulerPlugin, WorkerPlugin

__all__ = ["SchedulerPlugin", "WorkerPlugin", "NannyPlugin"]
