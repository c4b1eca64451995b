"""The hello-code example: runs from the uploaded code folder."""

import os

print("hello world from", os.path.basename(__file__))
