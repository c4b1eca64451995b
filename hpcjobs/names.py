"""Job names like Azure ML's: ``adjective_noun_`` plus 10 characters."""

from __future__ import annotations

import secrets

ADJECTIVES = (
    "amber", "ample", "bold", "brave", "bright", "brisk", "busy", "calm", "clever", "coral", "cosmic", "crimson",
    "cyan", "dreamy", "eager", "epic", "fluffy", "frosty", "funny", "gentle", "gifted", "goofy", "happy", "honest",
    "icy", "ivory", "jolly", "joyful", "keen", "kind", "lemon", "lime", "loyal", "lucid", "lucky", "magenta",
    "mellow", "mighty", "modest", "neat", "nice", "olive", "orange", "patient", "plucky", "polite", "quick",
    "quiet", "quirky", "red", "salmon", "serene", "sharp", "shy", "silly", "silver", "sincere", "sleepy", "smart",
    "stoic", "strong", "sunny", "sweet", "tender", "tidy", "tough", "upbeat", "vibrant", "witty", "yellow", "zen",
)
NOUNS = (
    "apple", "bear", "beard", "bee", "boat", "brush", "camel", "car", "carrot", "cat", "cheetah", "cherry",
    "cloud", "coconut", "cup", "deer", "dog", "dolphin", "door", "drain", "eagle", "egg", "engine", "fennel",
    "fig", "fish", "garden", "gate", "goat", "grape", "guava", "hair", "hamster", "hat", "helmet", "holiday",
    "island", "jackal", "kettle", "kite", "leek", "lemon", "lion", "lizard", "mango", "monkey", "moon", "night",
    "octopus", "onion", "owl", "panda", "pear", "pen", "pencil", "pepper", "pizza", "plum", "potato", "rabbit",
    "river", "rocket", "rose", "sail", "salt", "school", "seal", "shark", "snail", "soccer", "spoon", "stone",
    "sugar", "swan", "tail", "tiger", "tomato", "tongue", "train", "tree", "tuna", "turtle", "wall", "whale",
)
_ALPHABET = "bcdfghjklmnpqrstvwxyz0123456789"


def generate_job_name() -> str:
    """A fresh random name, e.g. ``ivory_octopus_yd6by49kxf``."""
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{secrets.choice(ADJECTIVES)}_{secrets.choice(NOUNS)}_{suffix}"


def generate_display_name() -> str:
    """A friendly display name (``adjective_noun``), as Azure sets when none is given."""
    return f"{secrets.choice(ADJECTIVES)}_{secrets.choice(NOUNS)}"


def new_token() -> str:
    """A unique submission token, carried in the Slurm job's comment."""
    return secrets.token_hex(8)
