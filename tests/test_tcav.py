"""TCAV (Kim et al. 2018; paper 001, ref. 22): against Captum's TCAV on the same concept sets,
layer and classifier, a planted concept direction recovered, concept sets, and errors.

Tolerances (stated): sign-count TCAV scores equal Captum's exactly (the same count of
positive directional derivatives; the model runs in float64, so no derivative is within
rounding of 0); CAVs agree to cosine >= 1 - 1e-9 (both logistic regressions solved to
their optimum); Captum's magnitude (the mean derivative along its unnormalised CAV,
computed in float32) to rtol 1e-4.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from torch import nn

from cnnlens.analysis import TCAV, Concept, folder_concepts, learn_cav, shapes_concepts
from cnnlens.analysis.concepts.tcav import directional_derivatives
from cnnlens.data import as_dataset
from cnnlens.errors import CnnlensError, InputError, LayerError, TargetError
from cnnlens.hooks import model_fingerprint, same_fingerprint


def conv_net(dtype=torch.float64, inplace=False) -> nn.Module:
    torch.manual_seed(0)
    layers = OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1),
        relu1=nn.ReLU(),
        conv2=nn.Conv2d(6, 8, 3, stride=2, padding=1),
        relu2=nn.ReLU(inplace=inplace),
        pool=nn.AdaptiveAvgPool2d(2),
        flat=nn.Flatten(),
        head=nn.Linear(32, 4),
    )
    return nn.Sequential(layers).to(dtype).eval()


def images(rng: np.random.Generator, n: int, shift: np.ndarray | float = 0.0) -> torch.Tensor:
    return torch.from_numpy(rng.normal(size=(n, 3, 8, 8)) + shift).float()


@pytest.fixture(scope="module")
def sets():
    """Two concepts (stripes, a red tint), a random pool and 40 class images (4 classes)."""
    rng = np.random.default_rng(0)
    stripes, red = np.zeros((3, 8, 8)), np.zeros((3, 8, 8))
    stripes[:, ::2] = 1.5
    red[0] = 1.0
    concepts = {"striped": images(rng, 30, stripes), "red": images(rng, 30, red)}
    pool = images(rng, 200)
    random = (pool, torch.zeros(200, dtype=torch.long))
    classes = (images(rng, 40), torch.arange(40) % 4)
    return concepts, random, classes


# --- against Captum -----------------------------------------------------------------------


class SameLogistic:
    """Captum classifier: scikit-learn's L2 logistic regression (C = 1) on all the
    activations Captum gives it, in full dimension, solved to its optimum (mixed into
    Captum's abstract ``Classifier`` in the test, so that captum stays an optional import)."""

    def __init__(self) -> None:
        self.lm = None

    def train_and_eval(self, dataloader, **kwargs):
        xs, ys = zip(*dataloader, strict=True)
        x, y = torch.cat(xs).numpy(), torch.cat(ys).numpy()
        self.lm = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-10, max_iter=100)
        self.lm.fit(x, y)
        return {"accs": torch.tensor(self.lm.score(x, y))}

    def weights(self):
        w = torch.from_numpy(self.lm.coef_[0].copy())
        return torch.stack([-w, w])  # rows: classes_[0], classes_[1]

    def classes(self):
        return self.lm.classes_.tolist()


@pytest.mark.numerics
def test_matches_captum_tcav(sets, tmp_path):
    concept_mod = pytest.importorskip("captum.concept")
    from captum.concept._utils.classifier import Classifier
    from captum.concept._utils.common import concepts_to_str
    from torch.utils.data import DataLoader

    classifier = type("SameLogisticClassifier", (SameLogistic, Classifier), {})
    model = conv_net()
    concepts, random, (x, y) = sets
    tcav = TCAV("conv2", n_random=3).fit(model, concepts, random=random)
    result = tcav.score(model, (x, y))

    # Captum learns each CAV again from our training images of the two sets (its own
    # activations, its own classifier call), then scores each class's images.
    ids = iter(range(1000))

    def concept(name, data, indices):
        batches = DataLoader(data.tensors(indices)[0].double(), batch_size=16)
        return concept_mod.Concept(next(ids), name, batches)

    ours, experiments = [], []
    for c in tcav.concept_sets_:
        for cav in tcav.cavs_[c.name]:
            ours.append(cav)
            experiments.append(
                [
                    concept(c.name, c.data, cav.concept_train),
                    concept(cav.counterpart, tcav.random_data_, cav.random_train),
                ]
            )
    for cav in tcav.random_cavs_:
        ours.append(cav)
        experiments.append(
            [
                concept(cav.concept, tcav.random_data_, cav.concept_train),
                concept(cav.counterpart, tcav.random_data_, cav.random_train),
            ]
        )
    captum = concept_mod.TCAV(model, ["conv2"], classifier=classifier(), save_path=f"{tmp_path}/")
    x64 = x.double()
    theirs = {k: captum.interpret(x64[y == k], experiments, target=k) for k in range(4)}

    ours_scores = torch.cat(
        [result.scores.transpose(1, 2).reshape(-1, 4), result.random_scores.T]
    )  # [experiment, class], in the order of ``experiments``
    for e, (pair, cav) in enumerate(zip(experiments, ours, strict=True)):
        stats = captum.cavs[concepts_to_str(pair)]["conv2"].stats
        w = stats["weights"][stats["classes"].index(pair[0].id)].double()  # towards the concept
        assert float(w @ cav.vector / w.norm()) >= 1 - 1e-9, (cav.concept, cav.counterpart)
        vector = cav.vector[None]
        for k in range(4):
            mask = y == k
            score = theirs[k][concepts_to_str(pair)]["conv2"]
            count = round(float(score["sign_count"][0]) * int(mask.sum()))
            assert count == round(float(ours_scores[e, k]) * int(mask.sum())), (e, k)
            s = directional_derivatives(model, (x[mask], y[mask]), "conv2", y[mask], vector)
            mean = float(s.mean()) * float(w.norm())
            assert mean == pytest.approx(float(score["magnitude"][0]), rel=1e-4, abs=1e-6)


# --- a planted concept direction ----------------------------------------------------------


def planted(channels: int = 8, side: int = 2, seed: int = 0):
    """A model whose layer ``features`` (identity 1x1 conv, then ReLU, pooling, linear head)
    has a direction u that raises logit 0, lowers logit 1 and is orthogonal to class 2's
    weights; concept images are random images shifted along u."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.2, 1.0, channels)
    u /= np.linalg.norm(u)
    other = rng.normal(size=channels)
    other -= (other @ u) * u
    other /= np.linalg.norm(other)
    model = nn.Sequential(
        OrderedDict(
            features=nn.Conv2d(channels, channels, 1),
            relu=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(channels, 3),
        )
    )
    with torch.no_grad():
        model.features.weight.copy_(torch.eye(channels)[:, :, None, None])
        model.features.bias.zero_()
        w = np.stack([2 * u, -2 * u, 2 * other]) + 0.05 * rng.normal(size=(3, channels))
        model.head.weight.copy_(torch.from_numpy(w))
        model.head.bias.zero_()

    def draw(n: int, shift: float = 0.0) -> torch.Tensor:
        x = 1.5 + rng.normal(size=(n, channels, side, side)) + shift * u[None, :, None, None]
        return torch.from_numpy(x).float()

    direction = torch.from_numpy(np.repeat(u, side * side))  # u at every position, flattened
    return model.eval(), draw, direction / direction.norm()


@pytest.mark.numerics
@pytest.mark.parametrize("cav", ["logistic", "mean"])
def test_planted_concept_is_found(cav):
    model, draw, direction = planted()
    pool = draw(600)
    concepts = {"planted": draw(40, shift=3.0), "noise": draw(40)}
    classes = (draw(60), torch.arange(60) % 3)
    # Kim et al.'s test: in this linear model every direction gives each class one sign, so
    # a random set's mean score is as extreme as the planted one's and the exchangeable test
    # rightly cannot tell them apart; only the consistency across runs that Kim's t-test
    # counts separates the planted concept here.
    tcav = TCAV("features", n_random=10, cav=cav, alpha=0.01, test="kim")
    before = model_fingerprint(model)
    result = tcav.fit(model, concepts, random=(pool, torch.zeros(600).long())).score(model, classes)
    assert same_fingerprint(before, model_fingerprint(model))
    cosines = torch.stack([c.vector for c in tcav.cavs_["planted"]]) @ direction.double()
    assert float(cosines.min()) > (0.94 if cav == "mean" else 0.85)
    assert float(tcav.accuracy_[0].min()) >= 0.9  # the layer separates the concept
    assert 0.3 < float(tcav.accuracy_[1].mean()) < 0.7  # and not random images from random
    planted_row, noise_row = 0, 1
    assert result.mean[planted_row, 0] >= 0.99 and result.mean[planted_row, 1] <= 0.01
    assert bool(result.significant[planted_row, 0]) and bool(result.significant[planted_row, 1])
    assert not bool(result.significant[noise_row, :2].any())
    assert float(result.p_values[noise_row, :2].min()) > 0.05
    # the null distribution: random_i against random_j is random_j against random_i, negated
    assert torch.allclose(result.random_scores.mean(1), torch.full((3,), 0.5, dtype=torch.float64))
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    row = next(r for r in record["rows"] if r["concept"] == "planted" and r["class"] == 0)
    assert row["significant"] and row["score"] >= 0.99 and len(row["scores"]) == 10
    assert row["magnitude"] >= 0.99


def test_exchangeable_p_values_by_hand():
    """The default test: the concept's mean score against the means of the random sets taken
    as concepts (random_i against every random_j), t with R - 1 degrees of freedom."""
    from scipy import stats

    from cnnlens.analysis.concepts.tcav import p_values

    rng = np.random.default_rng(3)
    runs = 5
    scores = torch.from_numpy(rng.uniform(size=(2, 3, runs)))  # [C, K, R]
    random_scores = torch.from_numpy(rng.uniform(size=(3, runs * (runs - 1))))
    p = p_values(scores, random_scores, "exchangeable")
    for k in range(3):
        pairs = random_scores[k].numpy()
        null = [np.mean(pairs[i * (runs - 1) : (i + 1) * (runs - 1)]) for i in range(runs)]
        for c in range(2):
            t = (scores[c, k].mean().item() - np.mean(null)) / (
                np.std(null, ddof=1) * np.sqrt(1 + 1 / runs)
            )
            assert p[c, k].item() == pytest.approx(2 * stats.t.sf(abs(t), runs - 1), rel=1e-12)
    kim = p_values(scores, random_scores, "kim")
    direct = stats.ttest_ind(scores[1, 2].numpy(), random_scores[2].numpy()).pvalue
    assert kim[1, 2].item() == pytest.approx(direct, rel=1e-12)
    # all random sets alike and the concept too: no evidence either way (NaN, not significant)
    flat = p_values(
        torch.full((1, 1, runs), 0.5), torch.full((1, runs * (runs - 1)), 0.5), "exchangeable"
    )
    assert torch.isnan(flat).all()


@pytest.mark.numerics
def test_concepts_of_random_images_are_rarely_significant():
    """Calibration: 24 concepts that are random draws of the pool (the null by construction).
    The exchangeable test flags about alpha of the (concept, class) pairs; Kim et al.'s t-test,
    which takes a concept's runs for independent although they share its images, flags
    more. Bounds: 72 pairs at alpha 0.05 give 3.6 expected; 12 or more has probability
    below 1e-3 for independent pairs."""
    model, draw, _ = planted(seed=1)
    pool = draw(800)
    concepts = {f"noise{i}": draw(30) for i in range(24)}
    classes = (draw(90), torch.arange(90) % 3)
    found = {}
    for test in ("exchangeable", "kim"):
        tcav = TCAV("features", n_random=10, random_size=30, test=test, seed=2)
        result = tcav.fit(model, concepts, random=(pool, torch.zeros(800).long()))
        result = result.score(model, classes)
        assert result.test == test and result.to_dict()["test"] == test
        found[test] = int(result.significant.sum())
    assert found["exchangeable"] < 12, found
    assert found["kim"] > found["exchangeable"], found


def test_same_seed_same_result_and_chunks_do_not_matter(sets):
    model = conv_net(torch.float32)
    concepts, random, classes = sets
    first = TCAV("conv2", n_random=3, seed=3).fit(model, concepts, random=random)
    again = TCAV("conv2", n_random=3, seed=3, batch_size=7).fit(model, concepts, random=random)
    for name in first.concepts_:
        for a, b in zip(first.cavs_[name], again.cavs_[name], strict=True):
            assert torch.equal(a.random_train, b.random_train)
            assert float(a.vector @ b.vector) > 1 - 1e-6
    one, two = first.score(model, classes), again.score(model, classes)
    assert torch.equal(one.scores, two.scores) and torch.equal(one.random_scores, two.random_scores)
    other = TCAV("conv2", n_random=3, seed=4).fit(model, concepts, random=random)
    assert not torch.equal(other.random_sets_[0].indices, first.random_sets_[0].indices)


def test_gradient_is_taken_before_an_in_place_relu():
    """The layer's output, not what an in-place ReLU after it makes of it."""
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 4
    inplace = conv_net(torch.float32, inplace=True)
    plain = conv_net(torch.float32, inplace=False)
    vectors = torch.randn(5, 8 * 4 * 4, generator=torch.Generator().manual_seed(1))
    got = directional_derivatives(inplace, (x, y), "conv2", y, vectors, batch_size=4)
    store = {}
    handle = plain.conv2.register_forward_hook(lambda m, i, out: store.update(a=out))
    logits = plain(x.requires_grad_(True))
    handle.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), store["a"])
    assert torch.allclose(got, grad.flatten(1) @ vectors.T, rtol=1e-5, atol=1e-6)


def test_random_sets_are_distinct_and_exclude_the_concept(shapes_test):
    model = conv_net(torch.float32)
    data = as_dataset(shapes_test).subset(range(300))
    concepts = shapes_concepts(data, ["filled", "class=star"], n=20)
    tcav = TCAV("conv2", n_random=4, random_size=40).fit(model, concepts)
    assert tcav.random_data_ is data and tcav.random_size_ == 40
    drawn = torch.cat([r.indices for r in tcav.random_sets_])
    assert drawn.unique().numel() == 4 * 40  # disjoint random sets
    for name, concept in zip(tcav.concepts_, tcav.concept_sets_, strict=True):
        for cav in tcav.cavs_[name]:
            counterpart = torch.cat([cav.random_train, cav.random_test])
            assert not torch.isin(counterpart, concept.indices).any()
            train_test = torch.cat([cav.concept_train, cav.concept_test])
            assert torch.equal(train_test.sort().values, concept.indices.sort().values)
    assert len(tcav.random_cavs_) == 4 * 3 and tcav.random_accuracy_.shape == (12,)


# --- concept sets --------------------------------------------------------------------------


def test_shapes_concepts(shapes_test):
    names = shapes_test.attribute_names
    filled = names.index("filled")
    concepts = shapes_concepts(shapes_test, ["filled", "filled=0", "class=star"], n=25, seed=1)
    assert list(concepts) == ["filled", "filled=0", "class=star"]
    assert all(len(c) == 25 and c.data is shapes_test for c in concepts.values())
    assert shapes_test.attributes[concepts["filled"].indices, filled].all()
    assert not shapes_test.attributes[concepts["filled=0"].indices, filled].any()
    star = shapes_test.classes.index("star")
    assert (shapes_test.labels[concepts["class=star"].indices] == star).all()
    again = shapes_concepts(shapes_test, ["filled"], n=25, seed=1)
    assert torch.equal(again["filled"].indices, concepts["filled"].indices)
    every = shapes_concepts(shapes_test, n=None)
    assert list(every) == names
    assert len(every["striped"]) == int(shapes_test.attributes[:, names.index("striped")].sum())


def test_folder_concepts(tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("striped", 3), ("dotted", 4)):
        (tmp_path / name).mkdir()
        for i in range(count):
            pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    concepts = folder_concepts(tmp_path, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), size=8)
    assert sorted(concepts) == ["dotted", "striped"]
    assert len(concepts["striped"]) == 3 and len(concepts["dotted"]) == 4
    x = concepts["dotted"].images()
    assert x.shape == (4, 3, 8, 8) and float(x.min()) >= -2.0 - 1e-6
    assert isinstance(concepts["dotted"], Concept)


# --- errors ---------------------------------------------------------------------------------


def test_errors(sets, shapes_test):
    model = conv_net(torch.float32)
    concepts, random, classes = sets
    with pytest.raises(LayerError, match="no layer 'conv9'"):
        TCAV("conv9", n_random=2).fit(model, concepts, random=random)
    with pytest.raises(InputError, match="concept 'empty' has no images"):
        TCAV("conv2", n_random=2).fit(model, {"empty": torch.zeros(0, 3, 8, 8)}, random=random)
    empty = Concept("none", as_dataset(random), torch.zeros(0, dtype=torch.long))
    with pytest.raises(InputError, match="has no images"):
        TCAV("conv2", n_random=2).fit(model, [empty], random=random)
    with pytest.raises(InputError, match="'one' has 1 image.*hold"):
        TCAV("conv2", n_random=2).fit(model, {"one": concepts["red"][:1]}, random=random)
    with pytest.raises(InputError, match="give random="):
        TCAV("conv2", n_random=2).fit(model, concepts)
    with pytest.raises(InputError, match="fewer than n_random=10 distinct random sets"):
        TCAV("conv2", n_random=10, random_size=30).fit(model, concepts, random=random)
    bad = concepts["red"].clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN or infinite activations on 1 image.*'bad'"):
        TCAV("conv2", n_random=2).fit(model, {"bad": bad}, random=random)
    options = (("n_random", 1), ("cav", "svm"), ("held_out", 1.0), ("alpha", 0), ("test", "z"))
    for option, value in options:
        with pytest.raises(InputError, match=option if option != "cav" else "cav must be"):
            TCAV("conv2", **{option: value}).fit(model, concepts, random=random)
    with pytest.raises(InputError, match="not fitted"):
        TCAV("conv2").score(model, classes)

    tcav = TCAV("conv2", n_random=2).fit(model, concepts, random=random)
    with pytest.raises(TargetError, match=r"\[0, 4\).*\[7\]"):
        tcav.score(model, classes, targets=7)
    with pytest.raises(TargetError, match=">= 0"):
        tcav.score(model, classes, targets=-1)
    with pytest.raises(TargetError, match="one class per image"):
        tcav.score(model, classes, targets=torch.zeros(3, dtype=torch.long))
    big = (torch.zeros(2, 3, 16, 16), torch.zeros(2, dtype=torch.long))
    with pytest.raises(InputError, match="512 values per image but the CAVs have 128"):
        tcav.score(model, big)
    with pytest.raises(InputError, match="no attribute 'shiny'"):
        shapes_concepts(shapes_test, ["shiny"])
    with pytest.raises(InputError, match="no class 'hexagon'"):
        shapes_concepts(shapes_test, ["class=hexagon"])
    with pytest.raises(InputError, match="must be 0 or 1"):
        shapes_concepts(shapes_test, ["filled=2"])
    with pytest.raises(InputError, match="same at this layer"):
        same = torch.ones(4, 5, dtype=torch.float64)
        learn_cav(same, same.clone(), method="mean")
    assert issubclass(TargetError, CnnlensError)


def test_mid_layer_is_two_thirds_through_the_blocks():
    from cnnlens.analysis.concepts.tcav import mid_layer
    from cnnlens.nets import create

    model = create("resnet20", num_classes=8).eval()
    assert mid_layer(model, torch.zeros(1, 3, 32, 32)) == "layer2.2"
