"""labkit.handover: published models load exactly, with their provenance checked; a missing model of
the student's own falls back to the published one, loudly."""
import json

import pytest
import torch

from labkit import checkpoints, handover, models, prune, quant, settings

FULL, CI = settings.PROFILES["full"], settings.PROFILES["ci"]


def sparse_net(seed=0):
    torch.manual_seed(seed)
    net = models.resnet20(num_classes=10)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):          # batch-norm state that is not the default
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    prune.prune_by_percentage(net, 0.8)
    return net.eval()


def test_a_published_sparse_model_loads_with_the_same_outputs_and_masks(tmp_path):
    net = sparse_net()
    path = handover.publish(net, "m", what="a test model", profile=FULL, root=tmp_path, test_accuracy=torch.tensor(0.5))
    assert path == tmp_path / "m.json" and (tmp_path / "m.dc").is_file()
    doc = json.loads(path.read_text())
    assert doc["masks"] and doc["sparsity"] == pytest.approx(prune.sparsity(net).total, abs=1e-4)
    assert doc["facts"] == {"test_accuracy": 0.5} and doc["run"]["profile"] == "full"
    back, prov = handover.load("m", root=tmp_path)
    back.eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(back(x), net(x))
    assert {k: v.tolist() for k, v in prune.masks(back).items()} == {k: v.tolist() for k, v in prune.masks(net).items()}
    assert prov["sha256"] == doc["sha256"]


def test_the_compressed_form_is_much_smaller_than_a_checkpoint(tmp_path):
    net = sparse_net()
    handover.publish(net, "m", what="x", profile=FULL, root=tmp_path)
    checkpoints.save(net, tmp_path / "m_ckpt.pt")
    assert (tmp_path / "m.dc").stat().st_size < 0.4 * (tmp_path / "m_ckpt.pt").stat().st_size


def test_a_quantized_model_is_published_as_a_checkpoint_and_loads_its_quantizers(tmp_path):
    net = sparse_net()
    quant.set_bits(net, 4)
    handover.publish(net, "q", what="a 4-bit model", profile=FULL, root=tmp_path)
    assert (tmp_path / "q.pt").is_file() and not (tmp_path / "q.dc").exists()
    back, prov = handover.load("q", root=tmp_path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back.eval()(x), net.eval()(x)) and prov["bits"] == [4]


def test_flipped_bytes_in_the_model_are_refused_before_reading(tmp_path):
    handover.publish(sparse_net(), "m", what="x", profile=FULL, root=tmp_path)
    blob = bytearray((tmp_path / "m.dc").read_bytes())
    blob[len(blob) // 2] ^= 0x10
    (tmp_path / "m.dc").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256.*changed since it was published"):
        handover.load("m", root=tmp_path)


def test_another_editions_model_is_refused(tmp_path):
    handover.publish(sparse_net(), "m", what="x", profile=FULL, edition="2024", root=tmp_path)
    handover.load("m", edition="2024", root=tmp_path)       # its own edition: fine
    with pytest.raises(FileNotFoundError, match="no published model"):
        handover.load("m", root=tmp_path)                   # the course's edition looks elsewhere


def test_a_damaged_provenance_is_a_clear_error(tmp_path):
    handover.publish(sparse_net(), "m", what="x", profile=FULL, root=tmp_path)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable JSON.*git checkout"):
        handover.load("m", root=tmp_path)
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "file": "../../etc/passwd"}))
    with pytest.raises(ValueError, match="missing or wrong"):
        handover.load("m", root=tmp_path)


def test_a_quick_run_reads_its_own_folder_first_then_the_reference_runs(tmp_path):
    ref, quick = sparse_net(0), sparse_net(1)
    handover.publish(ref, "m", what="reference", profile=FULL, root=tmp_path)
    assert handover.load("m", profile=CI, root=tmp_path)[1]["what"] == "reference"
    handover.publish(quick, "m", what="quick", profile=CI, root=tmp_path)
    assert (tmp_path / "ci" / "m.dc").is_file()
    assert handover.load("m", profile=CI, root=tmp_path)[1]["what"] == "quick"
    assert handover.load("m", profile=FULL, root=tmp_path)[1]["what"] == "reference"


def test_own_model_first_else_the_published_one_said_loudly(tmp_path):
    ref, own = sparse_net(0), sparse_net(1)
    handover.publish(ref, "m", what="the course's model", profile=FULL, root=tmp_path)
    missing = tmp_path / "ckpt" / "m.pt"
    net, note = handover.own_or_published(missing, "m", made_by="Lab 2", root=tmp_path)
    assert "THE COURSE'S REFERENCE MODEL, NOT YOURS" in note and "run Lab 2 first" in note and str(missing) in note
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net.eval()(x), ref(x))
    missing.parent.mkdir()
    checkpoints.save(own, missing)
    net, note = handover.own_or_published(missing, "m", made_by="Lab 2", root=tmp_path)
    assert note.startswith("m: yours") and torch.equal(net.eval()(x), own(x))


@pytest.mark.parametrize("name", ["", "../x", "a b", 3])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="name is letters"):
        handover.publish(sparse_net(), name, what="x", profile=FULL, root=tmp_path)


def test_the_models_the_reference_run_published_load_with_their_provenance():
    """The repository's labs/handover/: each published model loads (SHA-256 checked), from the full
    profile of the course's edition, and is what its provenance says (sparsity, bits)."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "labs" / "handover"
    names = sorted(p.stem for p in root.glob("*.json"))
    assert "lab2_best_sparse" in names, f"Lab 2's best sparse model is not published in {root}"
    for name in names:
        net, prov = handover.load(name, root=root)
        assert prov["run"]["profile"] == "full" and prov["run"]["edition"] == "course"
        assert prune.sparsity(net).total == pytest.approx(prov["sparsity"], abs=1e-6)
        assert (root / prov["file"]).stat().st_size == prov["bytes"]
