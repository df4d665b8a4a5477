"""View makers: what turns a batch of images into the views SimCLR contrasts.

- `makers`: the `ViewMaker` protocol (and `CropViewMaker` for views cropped from large
  originals in the input pipeline) and the registry behind `--view_maker`.
- `augment`: `SimCLRAugment`, the paper's two views (crop, flip, colour jitter, grayscale,
  blur); `multicrop`: `MultiCropAugment`, two full views plus k small ones.
- `view_dict`: the contract between an input pipeline that makes views and the model
  (`{"view_1": ..., "view_2": ...}` or `{"crop_1": ...}`).
- `crop`, `color`, `blur`: the image operations, vectorised over a batch.

A new view maker is a class with the `ViewMaker` members plus one
`register_view_maker(name, factory)` line. Imports: `utils` only.
"""
from keras_simclr.views.augment import SimCLRAugment
from keras_simclr.views.makers import (VIEW_MAKERS, CropViewMaker, ViewMaker, make_view_maker,
                                       make_views, register_view_maker)
from keras_simclr.views.multicrop import MultiCropAugment

__all__ = [
    "CropViewMaker", "MultiCropAugment", "SimCLRAugment", "VIEW_MAKERS", "ViewMaker",
    "make_view_maker", "make_views", "register_view_maker",
]
