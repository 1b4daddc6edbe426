"""Domains: exact reconstruction, the mask values, batching, energies and configuration errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsuff.domains import RFFT, STFT, Time, get_domain


def clip(t: int, seed: int = 0) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(t).astype(np.float32))


CASES = [
    (RFFT(), 1000),
    (RFFT(), 1001),
    (STFT(n_fft=64, hop=16), 1000),
    (STFT(n_fft=64, hop=32, window="hamming"), 1001),
    (STFT(n_fft=32, hop=8, window="blackman"), 999),
    (STFT(n_fft=60, hop=16), 1000),  # hop does not divide n_fft: the scatter overlap-add
    (Time(), 1000),
    (Time(segment=7), 1001),
]


def full_and_empty(domain, x):
    """Analyse, then synthesise keeping everything and nothing (one compile per case)."""

    @jax.jit
    def run(x):
        z = domain.analyze(x)
        grid = domain.grid_shape(x.shape[0])
        return z, domain.synthesize(z, jnp.ones(grid, bool)), domain.synthesize(z, jnp.zeros(grid, bool))

    return run(x)


@pytest.mark.parametrize(("domain", "t"), CASES, ids=repr)
def test_keep_all_reconstructs_and_keep_nothing_gives_the_fill(domain, t):
    x = clip(t)
    z, full, empty = full_and_empty(domain, x)
    grid = domain.grid_shape(t)
    assert z.values.shape[: len(grid)] == grid and z.num_samples == t
    assert full.shape == (t,) and full.dtype == jnp.float32
    assert float(jnp.abs(full - x).max()) <= 1e-5
    assert empty.shape == (t,) and not np.asarray(empty).any()


def test_grid_shapes():
    assert RFFT().grid_shape(16000) == (8001,) and RFFT().grid_shape(480000) == (240001,)
    assert STFT(n_fft=512, hop=128).grid_shape(16000) == (257, 126)
    assert Time(segment=160).grid_shape(16000) == (100,) and Time(segment=7).grid_shape(15) == (3,)


def test_rfft_partial_mask_matches_numpy():
    x = clip(256, 1)
    mask = np.zeros(129, bool)
    mask[[3, 17, 64, 128]] = True
    got = jax.jit(lambda x, m: RFFT().synthesize(RFFT().analyze(x), m))(x, jnp.asarray(mask))
    spec = np.fft.rfft(np.asarray(x, np.float64))
    want = np.fft.irfft(np.where(mask, spec, 0), n=256)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_time_segments_keep_their_samples():
    x = clip(20, 2)
    mask = np.array([True, False, True])  # segments of 7: samples 0..6 and 14..19 stay
    d = Time(segment=7)
    got = np.asarray(jax.jit(lambda x, m: d.synthesize(d.analyze(x), m))(x, jnp.asarray(mask)))
    want = np.asarray(x).copy()
    want[7:14] = 0.0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("domain", [RFFT(fill="mean"), STFT(n_fft=32, hop=8, fill="mean"), Time(segment=4, fill="mean")], ids=repr)
def test_mean_fill_has_the_mean_magnitude_and_the_original_phase(domain):
    z = jax.jit(domain.analyze)(clip(300, 3))
    mag = np.abs(np.asarray(z.values))
    np.testing.assert_allclose(np.abs(np.asarray(z.fill)), mag.mean(), rtol=1e-5)
    v, f = np.asarray(z.values), np.asarray(z.fill)
    nz = mag > 1e-6
    np.testing.assert_allclose((f / np.abs(f))[nz], (v / mag)[nz], atol=1e-5)


@pytest.mark.parametrize("domain", [RFFT(fill="noise", noise_level=0.2), Time(fill="noise", noise_level=0.2)], ids=repr)
def test_noise_fill_is_deterministic_at_the_given_level(domain):
    x = clip(4000, 4)
    analyze = jax.jit(domain.analyze)
    a, b = analyze(x), analyze(x)
    np.testing.assert_array_equal(np.asarray(a.fill), np.asarray(b.fill))
    rms = lambda v: float(np.sqrt(np.mean(np.abs(np.asarray(v)) ** 2)))  # noqa: E731
    assert rms(a.fill) == pytest.approx(0.2 * rms(a.values), rel=0.1)
    other = jax.jit(type(domain)(fill="noise", noise_level=0.2, noise_seed=1).analyze)(x)
    assert not np.array_equal(np.asarray(other.fill), np.asarray(a.fill))
    empty = jax.jit(domain.synthesize)(a, jnp.zeros(domain.grid_shape(4000), bool))
    assert float(jnp.abs(empty).max()) > 0


@pytest.mark.parametrize("domain", [RFFT(), STFT(n_fft=32, hop=8), Time(segment=5)], ids=repr)
def test_vmap_over_masks_equals_loop_and_jit_equals_eager(domain):
    x = clip(203, 5)
    z = jax.jit(domain.analyze)(x)
    masks = np.random.default_rng(0).random((3, *domain.grid_shape(203))) < 0.4
    batched = jax.jit(jax.vmap(domain.synthesize, in_axes=(None, 0)))(z, masks)
    one = jax.jit(domain.synthesize)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(one(z, masks[i])), atol=1e-6)
    if not isinstance(domain, STFT):  # eager STFT costs seconds of per-op compiles; it is jnp all the same
        with jax.disable_jit():
            eager = domain.synthesize(domain.analyze(x), jnp.asarray(masks[0]))
        np.testing.assert_allclose(np.asarray(batched[0]), np.asarray(eager), atol=1e-5)
    analyze_all = jax.jit(jax.vmap(domain.analyze))
    both = jax.jit(jax.vmap(domain.synthesize))(analyze_all(jnp.stack([x, 2 * x, -x])), masks)
    np.testing.assert_allclose(np.asarray(both[1]), 2 * np.asarray(batched[1]), atol=1e-4)


@pytest.mark.parametrize(
    "domain", [RFFT(), RFFT(fill="noise"), STFT(n_fft=32, hop=8, fill="mean"), Time(segment=7, fill="noise")], ids=repr
)
def test_synthesis_is_affine_in_the_mask(domain):
    # the search builds mutants as s(A) + s(B) - s(empty) for disjoint A, B (Domain.affine)
    x = clip(301, 3)
    z = jax.jit(domain.analyze)(x)
    grid = domain.grid_shape(301)
    part = np.random.default_rng(1).integers(0, 3, grid)  # 0: in neither, 1: in A, 2: in B
    synth = jax.jit(jax.vmap(domain.synthesize, in_axes=(None, 0)))
    a, b, both, none = synth(z, np.stack([part == 1, part == 2, part > 0, np.zeros(grid, bool)]))
    assert domain.affine
    np.testing.assert_allclose(np.asarray(a + b - none), np.asarray(both), atol=2e-5)
    assert float(jnp.abs(a - both).max()) > 0.1  # the parts are not trivially equal


@pytest.mark.parametrize("t", [512, 513])  # even and odd: the Nyquist bin counts once or not at all
def test_cell_energies_add_up_to_the_signal_energy(t):
    x = clip(t, 6)
    energy = float(jnp.sum(x**2))
    for domain in (RFFT(), Time(), Time(segment=10)):
        e = jax.jit(lambda x, d=domain: d.cell_energy(d.analyze(x)))(x)
        assert e.shape == domain.grid_shape(t)
        assert float(e.sum()) == pytest.approx(energy, rel=1e-4)
    s = STFT(n_fft=64, hop=16)
    assert (np.asarray(jax.jit(lambda x: s.cell_energy(s.analyze(x)))(x)) >= 0).all()


def test_get_domain_and_errors():
    assert get_domain("rfft") == RFFT()
    assert get_domain("stft", n_fft=128, hop=32, fill="mean") == STFT(n_fft=128, hop=32, fill="mean")
    assert get_domain("time", segment=4).to_json() == {
        "name": "time", "fill": "zero", "noise_level": 0.1, "noise_seed": 0, "segment": 4,
    }
    assert hash(STFT()) == hash(STFT())  # configs are hashable: static jit arguments
    with pytest.raises(ValueError, match="unknown domain"):
        get_domain("cqt")
    with pytest.raises(ValueError, match="no option"):
        get_domain("rfft", n_fft=3)
    with pytest.raises(ValueError, match="fill"):
        RFFT(fill="pink")
    with pytest.raises(ValueError, match="hop"):
        STFT(n_fft=64, hop=128)
    with pytest.raises(ValueError, match="window"):
        STFT(window="nope")
    with pytest.raises(ValueError, match="segment"):
        Time(segment=0)
    with pytest.raises(ValueError, match="no window weight"):
        jax.eval_shape(STFT(n_fft=8, hop=8).analyze, clip(64))
    z = jax.eval_shape(RFFT().analyze, clip(64))
    with pytest.raises(ValueError, match="does not match the grid"):
        RFFT().synthesize(z, jnp.ones(10, bool))
    with pytest.raises(ValueError, match="one clip"):
        jax.eval_shape(RFFT().analyze, jnp.ones((2, 64)))
