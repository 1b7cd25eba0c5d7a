"""Progress bars (tqdm): notebook widgets, text, or none. The mode is an argument: the public entry
point that draws a bar reads ``settings.progress()`` once and passes it here."""
from __future__ import annotations

from .checks import one_of
from .settings import PROGRESS_MODES

__all__ = ["bar"]


def bar(total: int | None, desc: str, *, mode: str = "auto", unit: str = "it", enabled: bool = True,
        scale: bool = False):
    """A tqdm bar of ``total`` steps (None: unknown). ``mode``: ``auto`` (a widget in a notebook,
    text elsewhere), ``text`` or ``off``; ``enabled=False`` (a caller's ``progress=False``) is the
    same as ``off``. ``scale``: counts shown with binary prefixes (bytes: ``1.5MB``, not
    ``1572864B``). Bars go to stderr, never into a checked cell's output."""
    one_of("progress mode", mode, PROGRESS_MODES)
    if mode == "auto" and enabled:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=not enabled or mode == "off",
                unit_scale=scale, unit_divisor=1024 if scale else 1000)
