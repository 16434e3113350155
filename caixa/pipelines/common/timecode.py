"""Times in a recording as people read them: `03:12` in search hits and citations, and the
`00:03:12,500` / `00:03:12.500` stamps of SRT and WebVTT subtitles."""

from __future__ import annotations


def clock(seconds: float) -> str:
    """`03:12`, or `1:03:12` past an hour: where to play a recording from."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def stamp(seconds: float, decimal: str) -> str:
    """`00:03:12,500` (SRT, decimal ",") or `00:03:12.500` (WebVTT, decimal ".")."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"
