"""Pictures: grids with a marked column, class-balanced samples, 2-D maps of embeddings."""
import numpy as np
import pytest

from keras_simclr.evaluation import viz


def test_sample_across_classes_takes_turns_and_is_seeded():
    labels = np.repeat(np.arange(4), [50, 3, 20, 1])  # sorted by class, as folders are
    chosen = viz.sample_across_classes(labels, 8, seed=1)
    assert len(chosen) == 8 and len(set(chosen.tolist())) == 8
    assert sorted(labels[chosen[:4]].tolist()) == [0, 1, 2, 3]  # one of each class first
    counts = np.bincount(labels[chosen], minlength=4)
    assert counts[3] == 1 and sorted(counts[:3].tolist()) == [2, 2, 3]  # class 3 has one
    np.testing.assert_array_equal(chosen, viz.sample_across_classes(labels, 8, seed=1))
    assert not np.array_equal(chosen, viz.sample_across_classes(labels, 8, seed=2))
    assert len(viz.sample_across_classes(labels, 1000)) == len(labels)
    unlabelled = viz.sample_across_classes(np.full(10, -1), 4, seed=0)
    assert len(set(unlabelled.tolist())) == 4 and unlabelled.max() < 10


def test_image_grid_frames_the_marked_column():
    rows = [[np.zeros((4, 4, 3), np.uint8)] * 3] * 2
    grid = viz.image_grid(rows, pad=2, scale=2, marked_column=0)
    assert grid.shape == (2 + 2 * 10, 2 + 3 * 10, 3)
    assert tuple(grid[0, 0]) == viz.MARK and tuple(grid[5, 1]) == viz.MARK  # around column 0
    assert tuple(grid[0, 15]) == (255, 255, 255)  # above column 1: plain padding
    assert tuple(grid[5, 5]) == (0, 0, 0)  # the tile itself


@pytest.mark.parametrize("method", list(viz.PROJECTIONS))
def test_project_2d_separates_clusters(method):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    labels = np.repeat(np.arange(3), 20)
    points = viz.project_2d(centres[labels] + rng.normal(size=(60, 16)), method, seed=0)
    assert points.shape == (60, 2) and points.dtype == np.float32
    means = np.stack([points[labels == c].mean(axis=0) for c in range(3)])
    spread = max(points[labels == c].std(axis=0).max() for c in range(3))
    gaps = [np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread
    with pytest.raises(ValueError, match="projection"):
        viz.project_2d(points, "umap")


def test_embedding_map_colours_classes_and_shows_thumbnails():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    points = rng.normal(size=(90, 2)) + 4 * labels[:, None]
    images = np.zeros((90, 8, 8, 3), np.uint8)
    images[:, :, :, 1] = 201  # a green no dot or legend has
    picture = viz.embedding_map(points, labels, ("cat", "dog", "car"), images, thumbnails=5,
                                size=300, title="a map")
    assert picture.dtype == np.uint8 and picture.shape[0] == 300 + 28
    assert 300 < picture.shape[1] < 300 + 100  # plot and legend
    colours = {tuple(c) for c in picture.reshape(-1, 3)}
    assert {viz.class_colour(c) for c in range(3)} <= colours
    assert viz.class_colour(3) not in colours
    thumbnails = np.all(picture == (0, 201, 0), axis=-1)
    assert thumbnails.sum() >= 5 * (300 // 14) ** 2 * 0.5  # five thumbnails, some overlap
    plain = viz.embedding_map(points, size=200)  # no labels, no images: grey dots only
    assert plain.shape == (208, 200, 3)
    assert viz.UNLABELLED in {tuple(c) for c in plain.reshape(-1, 3)}


def test_class_colours_are_distinct_beyond_the_palette():
    colours = [viz.class_colour(c) for c in range(40)]
    assert len(set(colours)) == 40 and viz.class_colour(-1) == viz.UNLABELLED
