"""Photos for the detect and classify tests: ultralytics' own test images, found without
importing ultralytics (which takes seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.find_spec("ultralytics")
assert _spec is not None and _spec.submodule_search_locations, "ultralytics is not installed"
ASSETS = Path(next(iter(_spec.submodule_search_locations))) / "assets"
BUS, ZIDANE = ASSETS / "bus.jpg", ASSETS / "zidane.jpg"
# ImageNet labels that are fair answers for bus.jpg (a city bus, people in front)
VEHICLES = {"minibus", "trolleybus", "school bus", "passenger car", "tram", "police van"}
