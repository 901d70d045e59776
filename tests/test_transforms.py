"""forgeml.data.transforms: steps on chosen leaves of nested samples, one draw per sample."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from forgeml import DataError
from forgeml.data import NumpyDataset
from forgeml.data.transforms import (
    Cast,
    ComposeTree,
    Normalize,
    RandomCrop,
    RandomFlip,
    Resize,
    Select,
    Step,
    ToTensor,
)


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


def image_and_mask(height: int = 8, width: int = 10) -> dict[str, Any]:
    """An HWC image whose first channel is the mask: equal crops keep them equal."""
    image = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    return {"image": image, "mask": image[..., 0].copy(), "label": 7}


# -- random steps: one draw per sample, shared by every chosen leaf ----------------------------


def test_random_crop_gives_image_and_mask_the_same_window() -> None:
    compose = ComposeTree([RandomCrop((4, 5), keys=("image", "mask"))], seed=0)
    corners = set()
    for _ in range(20):
        sample = image_and_mask()
        out = compose(sample)
        assert out["image"].shape == (4, 5, 3)
        assert out["mask"].shape == (4, 5)
        np.testing.assert_array_equal(out["mask"], out["image"][..., 0])
        top, left = divmod(int(out["image"][0, 0, 0]) // 3, 10)
        np.testing.assert_array_equal(out["image"], sample["image"][top : top + 4, left : left + 5])
        corners.add((top, left))
        assert out["label"] == 7
        assert sample["mask"].shape == (8, 10)
    assert len(corners) > 5  # the window moves from sample to sample


def test_random_flip_gives_image_and_mask_the_same_flips() -> None:
    compose = ComposeTree([RandomFlip(horizontal=True, vertical=True, keys=("image", "mask"))])
    sample = image_and_mask(4, 4)
    mask = sample["mask"]
    flipped = {  # each outcome, known by the value in its top-left corner
        int(mask[0, 0]): mask,
        int(mask[0, -1]): mask[:, ::-1],
        int(mask[-1, 0]): mask[::-1],
        int(mask[-1, -1]): mask[::-1, ::-1],
    }
    seen = set()
    for seed in range(30):
        out = compose(sample, rng=seed)
        np.testing.assert_array_equal(out["mask"], out["image"][..., 0])
        corner = int(out["mask"][0, 0])
        np.testing.assert_array_equal(out["mask"], flipped[corner])
        seen.add(corner)
    assert seen == set(flipped)  # none, left-right, upside down, and both


def test_flip_directions() -> None:
    image = np.arange(6).reshape(2, 3)
    always = {"p": 1.0}
    np.testing.assert_array_equal(RandomFlip(**always)(image), image[:, ::-1])
    np.testing.assert_array_equal(
        RandomFlip(horizontal=False, vertical=True, **always)(image), image[::-1]
    )
    np.testing.assert_array_equal(RandomFlip(p=0.0)(image), image)
    with pytest.raises(DataError, match="flips nothing"):
        RandomFlip(horizontal=False)
    with pytest.raises(DataError, match=r"probability in \[0, 1\]. Got 2"):
        RandomFlip(p=2)


def test_steps_work_on_torch_tensors_channels_first(torch: Any) -> None:
    image = torch.arange(3 * 8 * 8).reshape(3, 8, 8)
    sample = {"image": image, "mask": image[0].clone()}
    compose = ComposeTree(
        [
            RandomCrop(5, keys=("image", "mask")),
            RandomFlip(horizontal=True, vertical=True, keys=("image", "mask")),
        ],
        seed=1,
    )
    for _ in range(10):
        out = compose(sample)
        assert out["image"].shape == (3, 5, 5)
        assert out["mask"].shape == (5, 5)
        assert isinstance(out["image"], torch.Tensor)
        assert torch.equal(out["mask"], out["image"][0])


def test_seeds_make_transforms_reproducible() -> None:
    def steps() -> list[Step]:
        return [RandomCrop(3, keys="image"), RandomFlip(vertical=True, keys="image")]

    sample = image_and_mask()

    def run(compose: ComposeTree) -> list[np.ndarray]:
        return [compose(sample)["image"] for _ in range(6)]

    first, again = run(ComposeTree(steps(), seed=5)), run(ComposeTree(steps(), seed=5))
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(first[0], x) for x in first[1:])  # a new draw per sample
    other = run(ComposeTree(steps(), seed=6))
    assert any(not np.array_equal(x, y) for x, y in zip(first, other, strict=True))
    # a seed or a generator per call, whatever the compose's own generator did before
    a, b = ComposeTree(steps(), seed=1), ComposeTree(steps(), seed=2)
    np.testing.assert_array_equal(a(sample, rng=11)["image"], b(sample, rng=11)["image"])
    np.testing.assert_array_equal(
        a(sample, rng=np.random.default_rng(3))["image"],
        b(sample, rng=np.random.default_rng(3))["image"],
    )


# -- resize --------------------------------------------------------------------------------------


def test_resize_nearest_on_known_arrays() -> None:
    small = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    big = Resize(4, mode="nearest")(small)
    np.testing.assert_array_equal(big, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert big.dtype == np.uint8
    grid = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(Resize(2, mode="nearest")(grid), [[5, 7], [13, 15]])
    rgb = np.stack([small, small * 10, small * 100], axis=-1)  # HWC
    np.testing.assert_array_equal(Resize((2, 4), mode="nearest")(rgb)[..., 1], big[::2] * 10)


def test_resize_bilinear_on_known_arrays() -> None:
    row = np.array([[0.0, 4.0]])
    np.testing.assert_allclose(Resize((1, 4))(row), [[0.0, 1.0, 3.0, 4.0]])
    square = np.array([[0.0, 4.0], [8.0, 12.0]], dtype=np.float32)
    out = Resize(4)(square)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(out[:, 0], [0.0, 2.0, 6.0, 8.0])
    np.testing.assert_allclose(out[1, 1], 3.0)  # 0.75 * (0.75*0 + 0.25*4) + 0.25 * (...8, 12)
    np.testing.assert_allclose(Resize(1)(square), [[6.0]])  # the centre, between all four
    levels = Resize((1, 4))(np.array([[0, 255]], dtype=np.uint8))
    assert levels.dtype == np.uint8
    assert levels.tolist() == [[0, 64, 191, 255]]


@pytest.mark.parametrize(("size", "out"), [((5, 7), (9, 4)), ((8, 8), (3, 5)), ((6, 4), (6, 9))])
def test_resize_matches_torch_interpolate(torch: Any, size: tuple[int, int], out: Any) -> None:
    functional = torch.nn.functional
    image = np.random.default_rng(0).random((*size, 3)).astype(np.float32)
    tensor = torch.from_numpy(image).permute(2, 0, 1)  # CHW
    expected = functional.interpolate(tensor[None], size=out, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(
        Resize(out)(image), expected[0].permute(1, 2, 0).numpy(), rtol=1e-5, atol=1e-6
    )
    ours = Resize(out)(tensor)
    assert isinstance(ours, torch.Tensor)
    assert ours.shape == (3, *out)
    torch.testing.assert_close(ours, expected[0], rtol=1e-5, atol=1e-6)
    nearest = functional.interpolate(tensor[None], size=out, mode="nearest-exact")[0]
    assert torch.equal(Resize(out, mode="nearest")(tensor), nearest)


# -- normalize, cast, to-tensor --------------------------------------------------------------


def test_normalize_per_channel() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    out = Normalize(mean=(1.0, 2.0, 3.0), std=(1.0, 2.0, 4.0))(image)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (image - np.array([1, 2, 3])) / np.array([1, 2, 4]))
    gray = np.ones((2, 2), dtype=np.float64)
    single = Normalize(0.5, 0.25)(gray)
    assert single.dtype == np.float64
    assert np.allclose(single, 2.0)
    with pytest.raises(DataError, match="3 values per channel but the image of shape \\(2, 2\\)"):
        Normalize((0, 0, 0), (1, 1, 1))(gray)
    with pytest.raises(DataError, match="std must be positive"):
        Normalize(0.0, 0.0)


def test_normalize_torch_channels_first(torch: Any) -> None:
    image = torch.arange(12, dtype=torch.float32).reshape(3, 2, 2)
    out = Normalize(mean=(0.0, 4.0, 8.0), std=(1.0, 2.0, 4.0))(image)
    expected = (image - torch.tensor([0.0, 4.0, 8.0])[:, None, None]) / torch.tensor(
        [1.0, 2.0, 4.0]
    )[:, None, None]
    torch.testing.assert_close(out, expected)
    hwc = Normalize(mean=(0.0, 4.0), std=(1.0, 1.0), layout="HWC")(image.reshape(3, 2, 2))
    assert torch.equal(hwc[..., 1], image.reshape(3, 2, 2)[..., 1] - 4)


def test_cast(torch: Any) -> None:
    sample = {"x": np.ones((2, 2)), "t": torch.ones(2, 2), "label": 3}
    out = ComposeTree([Cast("float16", keys=("x", "t"))])(sample)
    assert out["x"].dtype == np.float16
    assert out["t"].dtype == torch.float16
    assert out["label"] == 3
    assert Cast(np.int32)(np.ones(2)).dtype == np.int32
    assert Cast(torch.bfloat16)(torch.ones(2)).dtype == torch.bfloat16
    everything = Cast("uint8")(sample)  # keys=None: every array leaf
    assert everything["x"].dtype == np.uint8
    assert everything["t"].dtype == torch.uint8
    with pytest.raises(DataError, match="Cast on 'x': numpy has no dtype 'float7'"):
        Cast("float7", keys="x")(sample)
    with pytest.raises(DataError, match="Cast needs a dtype"):
        Cast(object())


def test_to_tensor(torch: Any) -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # HWC
    out = ToTensor()(image)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    assert out.shape == (3, 2, 3)
    torch.testing.assert_close(out, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    mask = ToTensor()(np.ones((2, 3), dtype=np.int64))
    assert mask.shape == (1, 2, 3)
    assert mask.dtype == torch.int64
    sample = {"image": image, "label": np.int64(2)}
    converted = ToTensor()(sample)  # keys=None: images only
    assert isinstance(converted["image"], torch.Tensor)
    assert converted["label"] == 2
    with pytest.raises(DataError, match="ToTensor on 'image': ToTensor converts numpy images"):
        ToTensor(keys="image")({"image": torch.ones(3, 2, 2)})


# -- choosing leaves ---------------------------------------------------------------------------


def test_select() -> None:
    sample = {"inputs": {"image": np.zeros((2, 2)), "depth": 1}, "label": 5, "pair": (1, 2)}
    assert Select("label")(sample) == 5
    assert Select(("label", "inputs/depth", "pair/1"))(sample) == (5, 1, 2)
    assert Select({"x": "inputs/image", "y": "label"})(sample).keys() == {"x", "y"}
    with pytest.raises(
        DataError, match=r"no 'inputs/mask'.*leaves are: inputs/image, inputs/depth"
    ):
        Select("inputs/mask")(sample)


def test_keys_choose_the_leaves_and_none_means_every_image() -> None:
    sample = {"a": np.zeros((6, 6, 3)), "b": (np.zeros((6, 6)), np.zeros(4)), "label": 1}
    out = RandomCrop(2)(sample, rng=0)  # keys=None: every leaf with 2+ dimensions
    assert out["a"].shape == (2, 2, 3)
    assert out["b"][0].shape == (2, 2)
    assert out["b"][1].shape == (4,)
    assert out["label"] == 1
    only = RandomCrop(2, keys="b/0")(sample, rng=0)
    assert only["a"].shape == (6, 6, 3)
    assert only["b"][0].shape == (2, 2)
    pairs = RandomCrop(3, keys=0)((np.zeros((5, 5)), 1), rng=0)
    assert pairs[0].shape == (3, 3)
    assert pairs[1] == 1
    assert Resize(3)(np.zeros((6, 6))).shape == (3, 3)  # a bare array is a sample too
    with pytest.raises(DataError, match="name a leaf twice"):
        RandomCrop(2, keys=("a", "a"))(sample)
    with pytest.raises(DataError, match="keys are paths of leaves"):
        RandomCrop(2, keys=(1.5,))  # type: ignore[arg-type]


def test_errors_say_what_to_do() -> None:
    sample = {"image": np.zeros((6, 8, 3)), "mask": np.zeros((5, 8))}
    with pytest.raises(DataError, match=r"same height and width. Got image: 6x8; mask: 5x8"):
        RandomCrop(4, keys=("image", "mask"))(sample)
    with pytest.raises(DataError, match="RandomCrop of 7x7 does not fit images of 6x8"):
        RandomCrop(7, keys="image")(sample)
    with pytest.raises(DataError, match="positive integer or a \\(height, width\\) pair"):
        Resize((3, 0))
    with pytest.raises(DataError, match="layout must be one of auto, HWC, CHW"):
        Resize(3, layout="NHWC")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"works on numpy arrays and torch tensors.*builtins.list"):
        RandomFlip(keys="x", p=1.0)({"x": [[1, 2], [3, 4]]})
    with pytest.raises(DataError, match="two or more dimensions"):
        Resize(2, keys="v")({"v": np.zeros(3)})
    with pytest.raises(DataError, match="steps are Step objects or functions"):
        ComposeTree([3])  # type: ignore[list-item]


# -- in datasets, and custom steps -------------------------------------------------------------


class Jitter(Step):
    """A custom random step: one offset per sample, added to every chosen leaf."""

    def draw(self, leaves: Sequence[tuple[str, Any]], rng: np.random.Generator) -> Any:
        return float(rng.normal())

    def apply(self, leaf: Any, params: Any) -> Any:
        return leaf + params


def test_compose_in_a_dataset_with_custom_and_plain_steps() -> None:
    images = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    data = {"image": images, "mask": images[..., 0].copy()}
    compose = ComposeTree(
        [
            RandomCrop(4, keys=("image", "mask")),
            Jitter(keys=("image", "mask")),
            lambda s: {**s, "area": s["mask"].size},
        ],
        seed=0,
    )
    batches = NumpyDataset(data).map_el(compose)  # each sample in the batch, its own draw
    batch = batches.peek()
    assert batch["image"].shape == (6, 4, 4, 3)
    assert batch["area"].tolist() == [16] * 6
    np.testing.assert_allclose(batch["mask"], batch["image"][..., 0])
    samples = NumpyDataset(data).unbatch().map(compose).batch(4)
    assert [len(b["mask"]) for b in samples] == [4, 2]
    assert repr(compose).startswith("ComposeTree([RandomCrop((4, 4), keys=('image', 'mask')),")


@pytest.mark.slow
def test_dataloader_workers_draw_differently(torch: Any) -> None:
    images = np.broadcast_to(np.arange(36.0).reshape(6, 6), (8, 6, 6)).copy()  # 8 alike
    compose = ComposeTree([RandomCrop(5), RandomFlip(horizontal=True, vertical=True)], seed=0)
    ds = NumpyDataset(images).unbatch().map(compose).torch()
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    crops = [(int(c[0, 0]), int(c[-1, -1])) for c in loader]  # corners tell crop and flips
    assert len(set(crops)) > 1
    assert crops[0::2] != crops[1::2]  # workers take turns: worker 1 is not worker 0 again
