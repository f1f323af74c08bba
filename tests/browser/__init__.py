"""Driving Debian's chromium with Playwright for the console's tests."""
