"""Every built-in plugin, one folder each, grouped by kind (``plugins/<kind>/<name>/``).

The contracts they implement are in ``llmd_router.framework``; ``builtin.py`` registers them all
in one function. A plugin never imports the application, the transport or the command line.
"""
