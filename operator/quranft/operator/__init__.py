"""The QuranFineTune controller (kopf). Importing the package registers the handlers, so
`kopf run -m quranft.operator` works as well as `quranft operator`."""
from . import campaign_handlers, handlers  # noqa: F401  (registers kopf handlers)
