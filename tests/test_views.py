"""View makers: the protocol, the registry, and a new view maker in one file plus one line."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import blob_images
from keras_simclr import MultiCropAugment, SimCLRAugment, build_simclr, data, losses, views
from toy_views import NoisyFlips

views.register_view_maker("toy_noisy_flips", NoisyFlips)  # the one line that adds a view maker


def test_the_built_in_view_makers_have_the_protocol_and_are_registered():
    simclr = views.make_view_maker("simclr", image_size=16, jitter_strength=0.3, seed=1,
                                   small_views=2)  # small_views: only multicrop takes it
    assert type(simclr) is SimCLRAugment and simclr.jitter_strength == 0.3
    multicrop = views.make_view_maker("multicrop", image_size=16, small_views=2,
                                      small_view_size=8, jitter_strength=0.3, seed=1)
    assert type(multicrop) is MultiCropAugment and multicrop.num_views == 4
    assert multicrop.small.jitter_strength == 0.3 and multicrop.small.image_size == 8
    for maker in (simclr, multicrop):
        assert isinstance(maker, views.CropViewMaker)
        made = views.make_views(maker, blob_images(4, size=16)[0])
        assert len(made) == maker.num_views and made[0].shape == (4, 16, 16, 3)
    assert [v.shape[1] for v in multicrop.views(blob_images(4, size=16)[0])] == [16, 16, 8, 8]


def test_a_new_view_maker_is_one_file_and_one_registration_line():
    """tests/toy_views.py plus the line at the top of this file: a plain class with the
    `ViewMaker` members, given only the arguments it declares, used by the model and the
    input pipeline (which resizes images whole for it: it cannot crop single images)."""
    maker = views.make_view_maker("toy_noisy_flips", image_size=8, seed=3, jitter_strength=0.3)
    assert isinstance(maker, views.ViewMaker) and not isinstance(maker, views.CropViewMaker)
    images, labels = blob_images(32, size=16)
    made = views.make_views(maker, images)
    assert len(made) == 3 and made[0].shape == (32, 8, 8, 3)
    assert np.abs(made[0].numpy() - made[1].numpy()).max() > 0.05  # random views
    batches = data.pretrain_dataset("shapes", image_size=12, global_batch_size=8, seed=0,
                                    augmenter=NoisyFlips(12, seed=0))
    batch, _ = next(iter(batches))
    assert sorted(batch) == ["view_1", "view_2", "view_3"] and batch["view_3"].shape == (8, 12, 12, 3)
    model = build_simclr(backbone="resnet10", width_multiplier=0.125, head_depth=2, proj_dim=8,
                         loss=losses.NTXent(0.5), augmenter=maker)
    model.compile(optimizer="adam")
    history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_the_registry_rejects_taken_names_and_makers_without_the_protocol():
    with pytest.raises(ValueError, match="'simclr' is already registered"):
        views.register_view_maker("simclr", NoisyFlips)
    views.register_view_maker("toy_not_a_view_maker", lambda image_size: object())
    try:
        with pytest.raises(TypeError, match="lacks the ViewMaker members"):
            views.make_view_maker("toy_not_a_view_maker", image_size=8)
    finally:
        del views.VIEW_MAKERS["toy_not_a_view_maker"]
    with pytest.raises(ValueError, match="unknown view maker 'nope'"):
        views.make_view_maker("nope", image_size=8)
    with pytest.raises(TypeError, match="no view maker takes"):
        views.make_view_maker("simclr", image_size=8, jiter_strength=0.5)


def test_a_plain_layer_makes_two_views_by_two_calls():
    calls = []

    def one_view(images):
        calls.append(images)
        return tf.cast(images, tf.float32) / 255.0

    images = blob_images(2, size=8)[0]
    assert len(views.make_views(one_view, images)) == 2 and len(calls) == 2
    assert not isinstance(one_view, views.ViewMaker)
