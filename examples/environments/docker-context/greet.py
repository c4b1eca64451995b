"""Copied into the image by the Dockerfile next to it."""

import os

print(os.environ.get("HELLO_FROM_IMAGE", "not in the image"))
