"""``jsuff convert`` and ``jsuff predict`` on a tiny DistilHuBERT-shaped GTZAN classifier."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jsuff.app.cli import main  # noqa: E402
from jsuff.models import load_model  # noqa: E402
from tests.helpers.hf import GENRES, W2V2_TINY  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A HuBERT classifier shaped like DistilHuBERT (2 layers, no projection layer norm)."""
    sizes = {k: v for k, v in W2V2_TINY.items() if k != "num_labels"}
    config = transformers.HubertConfig(**sizes, feat_proj_layer_norm=False, id2label=dict(enumerate(GENRES)))
    torch.manual_seed(0)
    model = transformers.HubertForSequenceClassification(config).eval()
    with torch.no_grad():  # the default init leaves the head near zero; make labels differ
        model.classifier.weight.normal_(0, 1.0)
    folder = tmp_path_factory.mktemp("distilhubert-gtzan")
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def converted(hf_folder, tmp_path_factory):
    dest = tmp_path_factory.mktemp("models") / "distilhubert"
    assert main(["convert", str(hf_folder), "--out", str(dest)]) == 0
    return dest


def test_convert_writes_a_loadable_model(converted):
    model = load_model(converted)
    assert model.arch == "hubert" and list(model.labels) == GENRES and model.sample_rate == SR
    assert model.config["feat_proj_layer_norm"] is False and model.config["num_hidden_layers"] == 2


def test_convert_refuses_to_overwrite_unless_asked(hf_folder, converted, capsys):
    before = (converted / "model.json").read_text()
    assert main(["convert", str(hf_folder), "--out", str(converted)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and err.startswith("jsuff: error:")
    assert (converted / "model.json").read_text() == before
    assert main(["convert", str(hf_folder), "--out", str(converted), "--arch", "hubert", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote") and "hubert, 10 labels, 16000 Hz" in out


def test_convert_errors(hf_folder, tmp_path, capsys):
    dest = tmp_path / "out"
    assert main(["convert", str(hf_folder), "--out", str(dest), "--arch", "resnet9000"]) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'resnet9000'; supported:" in err and "hubert" in err and "wav2vec2" in err
    assert main(["convert", str(tmp_path / "nowhere"), "--out", str(dest)]) == 2
    assert "source not found" in capsys.readouterr().err
    cfg = json.loads((hf_folder / "config.json").read_text())
    cfg["conv_dim"] = [8, 16]  # the checkpoint's tensors no longer fit
    (tmp_path / "bad.json").write_text(json.dumps(cfg))
    assert main(["convert", str(hf_folder), "--out", str(dest), "--config", str(tmp_path / "bad.json")]) == 2
    assert "mis-shaped" in capsys.readouterr().err
    assert not dest.exists()


def test_predict_bad_model_dir(tmp_path, capsys):
    assert main(["predict", str(tmp_path), str(tmp_path / "a.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a jsuff model directory" in err


def test_predict(converted, tmp_path, capsys):
    pytest.importorskip("jsuff.audio")  # jsuff.audio lands from another branch
    import soundfile as sf

    rng = np.random.default_rng(0)
    clips = {
        "a.wav": (0.1 * rng.normal(size=SR // 2)).astype(np.float32),
        "b.wav": np.sin(2 * np.pi * 300 * np.arange(SR // 2) / SR).astype(np.float32) * 0.5,
        "c.wav": (0.1 * rng.normal(size=SR // 4)).astype(np.float32),  # another length
    }
    paths = []
    for name, x in clips.items():
        sf.write(tmp_path / name, x, SR, subtype="FLOAT")
        paths.append(str(tmp_path / name))
    assert main(["predict", str(converted), *paths, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    model = load_model(converted)
    assert [r["file"] for r in results] == paths
    for r, x in zip(results, clips.values()):
        expected = np.asarray(model(model.prepare(x)[None]))[0]
        np.testing.assert_allclose(r["logits"], expected, atol=1e-5)
        assert r["label"] == GENRES[int(np.argmax(expected))]
    assert main(["predict", str(converted), *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[r["file"], r["label"]] for r in results]


@pytest.mark.parametrize("weights", ["model.pth", "model.safetensors"])
def test_convert_a_state_dict_with_its_config(tmp_path, capsys, weights):
    """`jsuff convert model.pth --arch wav2vec2 --config config.json`: a bare state dict and a HF
    config.json (as Wav2Vec2ForSequenceClassification gives them) convert as the folder would."""
    config = transformers.Wav2Vec2Config(**W2V2_TINY)
    torch.manual_seed(1)
    ref = transformers.Wav2Vec2ForSequenceClassification(config).eval()
    with torch.no_grad():
        ref.classifier.weight.normal_(0, 1.0)
    ckpt, cfg = tmp_path / "ckpt", tmp_path / "cfg"
    ckpt.mkdir()
    cfg.mkdir()
    if weights.endswith(".pth"):
        torch.save({"state_dict": ref.state_dict()}, ckpt / weights)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(ckpt / weights))
    config.to_json_file(str(cfg / "config.json"))
    (cfg / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": SR}))
    dest = tmp_path / "out"
    assert main(["convert", str(ckpt / weights), "--arch", "wav2vec2", "--config", str(cfg / "config.json"),
                 "--out", str(dest)]) == 0
    assert "wav2vec2, 3 labels, 16000 Hz" in capsys.readouterr().out
    model = load_model(dest)
    assert model.config["do_normalize"] is False  # the preprocessor config beside config.json was read
    x = np.random.default_rng(0).normal(size=(2, 1600)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-4, rtol=0)
    files = {f["path"] for f in model.source["files"]}
    assert "config.json" in files and files & {"pytorch_model.bin", "model.safetensors"}
    # without --arch the config's model_type names the architecture
    assert main(["convert", str(ckpt / weights), "--config", str(cfg / "config.json"), "--out", str(tmp_path / "o2")]) == 0
    capsys.readouterr()
    # errors name the user's files, never the temporary folder they were linked into
    bad = json.loads((cfg / "config.json").read_text()) | {"conv_dim": [8, 16]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["convert", str(ckpt / weights), "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "mis-shaped" in err and str(ckpt / weights) in err and "jsuff-convert-" not in err
    assert not (tmp_path / "o3").exists()
