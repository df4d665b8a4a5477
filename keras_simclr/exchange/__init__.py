"""Models in and out of the project: SavedModel export and the official releases' import.

- `export`: a SavedModel of an encoder (and optionally its classifier) with uint8 and float
  serving signatures, written into place atomically where the filesystem allows.
- `official`: the google-research/simclr v1/v2 TF2 SavedModels read into this project's
  own `SimCLR` model, variable by variable.

Both sit at the top because they use the finished model; nothing in the library imports
them (the apps do). A new format is one module here.
"""
