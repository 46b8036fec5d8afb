"""Measuring a voice: ``evaluate`` (held-out NLL, attribution, range, memorization, the report) and
``versions`` (versions compared, drift across eras)."""
