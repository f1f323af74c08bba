"""The web console: hand-written HTML, CSS and ES modules served under ``/console/``.

No build step: the files in ``static/`` ship as package data and are served as they
are. The pages hold no data; they call the public ``/v1`` API (and ``/console/me``)
with the session cookie, like any other client.
"""

from gateway.console.pages import mount_console

__all__ = ["mount_console"]
