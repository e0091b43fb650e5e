"""Conformance harness: batchgpt and its emulator held against the real AI Power / AIPKit plugin.

`python -m tests.conformance --plugin-repo PATH --release 2.4.71` brings up a fresh WordPress on
loopback (MariaDB, Apache with mod_php, Debian's `wordpress`), installs the plugin at that release
from a local mirror of its release history, points it at a fake OpenAI upstream, runs the batchgpt
CLI against it and diffs batchgpt's emulator against the real plugin. See README.md here.
"""
