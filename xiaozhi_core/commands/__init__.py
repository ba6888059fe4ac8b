"""The core's own subcommands, each module found through the ``xiaozhi_core.commands``
entry-point group like any other distribution's (see :mod:`xiaozhi_core.command`)."""
