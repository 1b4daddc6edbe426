"""The Python API as a new user calls it (issue 16): names for domains and extraction modes, a
jsuff.Model where (apply_fn, params) go, clear errors for the usual mix-ups, a concise Model repr,
clips of different lengths, and the jittable candidate evaluation for embedding in user code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

import jsuff
from jsuff import STFT, ExtractConfig, Model, RFFT, SearchConfig, Time, explain, explain_many
from jsuff.audio import AudioError, resample
from jsuff.evaluate import candidate_labels
from jsuff.models import InputPolicy
from jsuff.search import responsibility_maps
from tests.helpers.toys import CFG, KEY, LOUDEST, T, band_mlp, loudest_clip, window_clip, window_model

LABELS = ("lowest", "low", "high", "highest")  # the quarter of the spectrum with the most magnitude


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.from_function(band_mlp, LOUDEST, sample_rate=8000, labels=LABELS, input=InputPolicy(length=T))


@pytest.fixture(scope="module")
def loudest():
    return explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY)


def _same(a, b):
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.responsibility, b.responsibility)
    assert a.summary() == b.summary()


# ---------------------------------------------------------------------------------------------
# Names where objects go


def test_domain_and_mode_names_equal_the_objects(loudest):
    _same(explain(band_mlp, LOUDEST, loudest_clip(), domain="rfft", config=CFG, key=KEY), loudest)
    by_name = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY, extract="contrastive")
    _same(by_name, explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=KEY,
                           extract=ExtractConfig(mode="contrastive")))
    assert by_name.mode == "contrastive" and by_name.necessary
    many = explain_many(band_mlp, LOUDEST, loudest_clip()[None], domain="rfft", extract="sufficient", config=CFG,
                        key=KEY)
    _same(many[0], loudest)


@pytest.mark.parametrize("name, cls", [("stft", STFT), ("time", Time)])
def test_stft_and_time_by_name_with_default_settings(name, cls):
    x = window_clip()
    by_name = responsibility_maps(window_model, None, x, domain=name, config=CFG, key=0)
    by_object = responsibility_maps(window_model, None, x, domain=cls(), config=CFG, key=jax.random.key(0))
    np.testing.assert_array_equal(by_name.maps, by_object.maps)
    assert by_name.maps.shape[2:] == cls().grid_shape(T)
    e = explain(window_model, None, x, domain=name, config=CFG, key=KEY)
    assert e.grid_shape == cls().grid_shape(T) and e.settings["domain"] == cls().to_json() and e.verified


def test_unknown_names_list_the_choices():
    x = loudest_clip()
    with pytest.raises(ValueError, match="unknown domain 'fft'; choose one of rfft, stft, time"):
        explain(band_mlp, LOUDEST, x, domain="fft", config=CFG)
    with pytest.raises(ValueError, match="mode must be one of .*'sufficient', 'contrastive', 'complete'.*'minimal'"):
        explain(band_mlp, LOUDEST, x, extract="minimal", config=CFG)
    with pytest.raises(TypeError, match=r"domain=STFT is the class; pass an instance, STFT\(...\), or its name 'stft'"):
        explain(band_mlp, LOUDEST, x, domain=STFT, config=CFG)
    with pytest.raises(TypeError, match="extract must be an ExtractConfig or a mode name"):
        explain(band_mlp, LOUDEST, x, extract=3, config=CFG)


# ---------------------------------------------------------------------------------------------
# A Model where (apply_fn, params) go


def test_a_model_explains_with_its_own_parameters(model, loudest):
    _same(explain(model, loudest_clip(), config=CFG, key=KEY), loudest)
    _same(explain_many(model, [loudest_clip()], config=CFG, key=KEY)[0], loudest)
    by_name = explain(model, loudest_clip(), config=CFG, key=KEY, target="low")
    assert by_name.target == 1 and by_name.summary() == explain(
        model, loudest_clip(), config=CFG, key=KEY, target=1).summary()
    r = responsibility_maps(model, loudest_clip(), config=CFG, key=KEY)
    np.testing.assert_array_equal(r.maps, responsibility_maps(band_mlp, LOUDEST, loudest_clip(), config=CFG,
                                                              key=KEY).maps)
    with pytest.raises(ValueError, match="'loud' is not one of the model's labels: lowest, low, high, highest"):
        explain(model, loudest_clip(), config=CFG, target="loud")
    with pytest.raises(TypeError, match="names need a jsuff.Model"):
        explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, target="low")


def test_a_model_fits_the_clip_to_its_rate_and_input(model, loudest, tmp_path):
    longer = np.concatenate([loudest_clip(), np.ones(100, np.float32)])
    _same(explain(model, longer, config=CFG, key=KEY), loudest)  # cropped to the model's 512 samples
    # an array at another rate is resampled; a file is read at the model's rate
    x16 = resample(loudest_clip(), 8000, 16000)
    at16 = explain(model, x16, sample_rate=16000, config=CFG, key=KEY)
    assert at16.grid_shape == (T // 2 + 1,) and at16.target == 2
    path = tmp_path / "clip16k.wav"
    sf.write(path, x16, 16000, subtype="FLOAT")
    from_file = explain(model, str(path), config=CFG, key=KEY)
    np.testing.assert_array_equal(from_file.mask, at16.mask)
    assert [e.target for e in explain_many(model, [path, str(path)], config=CFG, key=KEY)] == [2, 2]


def test_mixed_up_calls_say_which_call_to_write(model):
    x = loudest_clip()
    with pytest.raises(TypeError, match=r"a jsuff.Model carries its own parameters.*explain\(model, x\), or "
                                        r"explain\(model.apply, model.params, x\)"):
        explain(model, model.params, x)
    with pytest.raises(TypeError, match=r"needs three arguments, got two.*explain\(model, waveform\)"):
        explain(band_mlp, x)
    with pytest.raises(TypeError, match=r"second argument of explain_many is a jsuff.Model: pass it first"):
        explain_many(band_mlp, model, x)
    with pytest.raises(TypeError, match="got a Flax module"):
        explain(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), None, x)
    with pytest.raises(TypeError, match="must be a jsuff.Model or a function apply"):
        explain(LOUDEST, band_mlp, x)
    with pytest.raises(TypeError, match="sample_rate= needs a jsuff.Model"):
        explain(band_mlp, LOUDEST, x, sample_rate=8000)
    with pytest.raises(TypeError, match=r"needs the waveform"):
        responsibility_maps(model, key=KEY)


# ---------------------------------------------------------------------------------------------
# Clear errors


def test_a_file_path_as_the_waveform_points_to_load_audio():
    for bad in ("clip.wav", np.array(["clip.wav"])):
        with pytest.raises(AudioError, match=r"is a file path \('clip.wav'\).*jsuff.load_audio\(path, sample_rate="):
            explain(band_mlp, LOUDEST, bad, config=CFG)
    with pytest.raises(AudioError, match=r"waveforms\[1\] is a file path"):
        explain_many(band_mlp, LOUDEST, [loudest_clip(), "b.wav"], config=CFG)


def test_stereo_is_named_not_read_as_thousands_of_tiny_clips():
    stereo = np.stack([loudest_clip()] * 2, axis=-1)  # [512, 2], channels last
    with pytest.raises(AudioError, match=r"one 2-channel clip with channels last.*mix it down, x.mean\(axis=-1\)"):
        explain(band_mlp, LOUDEST, stereo, config=CFG)
    with pytest.raises(AudioError, match="would be 512 clips of 2 samples"):
        explain_many(band_mlp, LOUDEST, stereo, config=CFG)
    with pytest.raises(AudioError, match=r"2 clips \(use explain_many\) or one 2-channel clip with channels first"):
        explain(band_mlp, LOUDEST, stereo.T, config=CFG)


def test_clips_of_different_lengths_are_explained_a_length_at_a_time():
    clips = [window_clip(), window_clip()[:400], 0.5 * window_clip()]
    keys = jax.random.split(KEY, 3)
    many = explain_many(window_model, None, clips, domain=Time(segment=8), config=CFG, key=KEY)
    for clip, k, got in zip(clips, keys, many, strict=True):
        _same(got, explain(window_model, None, clip, domain=Time(segment=8), config=CFG, key=k))
    assert [e.sufficient_waveform.shape[0] for e in many] == [512, 400, 512]
    with pytest.raises(AudioError, match=r"3 clips of different lengths \(512, 400, 512\).*explain_many"):
        responsibility_maps(window_model, None, clips, domain=Time(segment=8), config=CFG, key=KEY)
    with pytest.raises(AudioError, match=r"waveforms\[1\] is all zeros"):
        explain_many(window_model, None, [clips[0], np.zeros(300, np.float32)], domain="time", config=CFG)


def test_an_apply_returning_a_tuple_or_a_dict_is_named():
    def with_hidden(p, x):
        return band_mlp(p, x), jnp.zeros((x.shape[0], 5, 8))

    with pytest.raises(TypeError, match=r"returned a tuple of 2 \(shapes \(1, 4\), \(1, 5, 8\)\).*apply\(p, x\)\[0\]"):
        explain(with_hidden, LOUDEST, loudest_clip(), config=CFG)
    with pytest.raises(TypeError, match=r"returned a dict with keys \['logits'\].*\['logits'\]"):
        jsuff.evaluate.predict(lambda p, x: {"logits": band_mlp(p, x)}, LOUDEST, loudest_clip()[None])


def test_an_int_key_is_a_seed(loudest):
    _same(explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=7), loudest)  # KEY = jax.random.key(7)
    _same(explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=np.int64(7)), loudest)
    default = explain(band_mlp, LOUDEST, loudest_clip(), config=CFG)
    _same(default, explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=jax.random.key(0)))
    for bad in ("7", 0.5, True):
        with pytest.raises(TypeError, match=r"key must be a jax.random.key\(seed\) or an int seed"):
            explain(band_mlp, LOUDEST, loudest_clip(), config=CFG, key=bad)


def test_model_repr_is_one_short_line():
    many = {f"layer_{i}": {"kernel": jnp.zeros((64, 64)), "bias": jnp.zeros(64)} for i in range(40)}
    m = Model.from_function(band_mlp, many, sample_rate=16000, labels=[f"class_{i}" for i in range(50)],
                            arch="hubert", input=InputPolicy(length=80000, pad="repeat"))
    text = repr(m)
    assert text == str(m) and "\n" not in text and len(text) < 250, text
    assert text == ("Model(arch='hubert', sample_rate=16000, labels=50 ['class_0', 'class_1', 'class_2', 'class_3', "
                    "'class_4', ...], params=166.4k, input=80000 samples (pad repeat, crop start))")
    assert "input=any length" in repr(Model.from_function(band_mlp, LOUDEST, sample_rate=8000, labels=LABELS))
    long = repr(Model.from_function(band_mlp, LOUDEST, sample_rate=8000, labels=["x" * 1000, "a\nb"]))
    assert "labels=2 ['xxxxxxxxxxxxxxxxxxxxxxx~', 'a\\nb']" in long and len(long) < 200


def test_drivers_refuse_tracing_and_name_the_jittable_entry():
    # issue 19: the search (responsibility_maps) is traceable now (tests/test_search.py); explain,
    # with its host-side extraction, is not
    def fn(x):
        return explain(band_mlp, LOUDEST, x, config=CFG)

    with pytest.raises(TypeError, match="host-side driver.*responsibility_maps.*jsuff.evaluate.candidate_labels"):
        jax.jit(fn)(loudest_clip())
    with pytest.raises(TypeError, match="host-side driver"):
        jax.vmap(fn)(np.stack([loudest_clip()] * 2))


# ---------------------------------------------------------------------------------------------
# Embedding: candidate evaluation inside the user's own jit and vmap


def test_candidate_labels_inside_a_users_jit_and_vmap():
    clips = jnp.asarray(np.stack([loudest_clip(), loudest_clip()[::-1].copy(), 2 * loudest_clip()]))
    masks = jax.random.bernoulli(jax.random.key(1), 0.3, (3, 7, T // 2 + 1)).at[:, 0].set(True)
    targets = jnp.array([2, 1, 0])

    @jax.jit
    def users_code(clips, masks, targets):  # the user's own jitted function, vmapped over clips
        def one(x, m, t):
            return candidate_labels(band_mlp, LOUDEST, "rfft", RFFT().analyze(x), m, t, batch=3)

        return jax.vmap(one)(clips, masks, targets)

    labels, conf = users_code(clips, masks, targets)
    assert labels.shape == conf.shape == (3, 7) and labels.dtype == jnp.int32
    for n in range(3):  # explicit synthesis + apply
        z = RFFT().analyze(clips[n])
        waves = jnp.stack([RFFT().synthesize(z, masks[n, k]) for k in range(7)])
        logits = band_mlp(LOUDEST, waves)
        np.testing.assert_array_equal(labels[n], np.argmax(logits, -1))
        np.testing.assert_allclose(conf[n], jax.nn.softmax(logits, -1)[:, int(targets[n])], rtol=1e-5, atol=1e-7)
    # the clip itself in place of its coefficients, one call for all candidates, the top-1 confidence
    whole, top = jax.jit(lambda m: candidate_labels(band_mlp, LOUDEST, RFFT(), clips[0], m))(masks[0])
    np.testing.assert_array_equal(whole, labels[0])
    assert bool(jnp.all(top >= conf[0] - 1e-6))
    with pytest.raises(TypeError, match=r"candidate_labels\(model.apply, model.params"):
        candidate_labels(Model.from_function(band_mlp, LOUDEST, sample_rate=8000, labels=LABELS), None, "rfft",
                         clips[0], masks[0])
