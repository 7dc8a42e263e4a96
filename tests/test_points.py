"""PointBertLlama: grouping equals a brute-force reference, order invariance, frozen stays frozen, save/reload and
remote code in a fresh process, point-cloud file formats, clear errors, and the builtin 3D-shape set."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModel

from hf_frozenlm import AutoModelForPointCloudClassification, PointBertLlamaForPointCloudClassification
from hf_frozenlm.data import DataError
from hf_frozenlm.data_points import (
    SHAPES3D_LABELS,
    PointCloudCollator,
    h5_point_dataset,
    point_folder_dataset,
    read_point_cloud,
    shapes3d_dataset,
)
from hf_frozenlm.modeling.modeling_pointbert_llama import farthest_point_sample, knn_indices

TINY_POINTS = dict(
    hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2, num_groups=16, group_size=16,
    group_encoder_hidden_sizes=[32, 64, 128], group_encoder_size=64, position_embedding_size=32,
    classifier_hidden_size=64, drop_path_rate=0.0,
)


@pytest.fixture(scope="module")
def tiny_points_model(smollm2_last_layer):
    llm_config, layer_states, provenance = smollm2_last_layer

    def build(**kwargs):
        torch.manual_seed(0)
        options = dict(num_labels=len(SHAPES3D_LABELS), trunk_kwargs=dict(TINY_POINTS))
        options["trunk_kwargs"].update(kwargs.pop("trunk_kwargs", {}))
        options.update(kwargs)
        model = PointBertLlamaForPointCloudClassification.from_parts("pointbert-small", copy.deepcopy(llm_config), **options)
        model.pointbert_llama.frozen_lm.load_llm_layer_states(layer_states)
        model.config.llm_source = dict(provenance)
        return model

    return build


def brute_force_fps(points, count):
    """Farthest point sampling written out point by point (the reference for the vectorised version)."""
    centroid = points.mean(0)
    chosen = [max(range(len(points)), key=lambda i: float(((points[i] - centroid) ** 2).sum()))]
    while len(chosen) < count:
        def distance_to_chosen(i):
            return min(float(((points[i] - points[j]) ** 2).sum()) for j in chosen)
        chosen.append(max(range(len(points)), key=distance_to_chosen))
    return chosen


def test_fps_and_knn_equal_brute_force():
    torch.manual_seed(0)
    points = torch.randn(2, 60, 3, dtype=torch.float64)
    fps = farthest_point_sample(points, 8)
    for b in range(2):
        assert fps[b].tolist() == brute_force_fps(points[b], 8)
    centers = points[torch.arange(2)[:, None], fps]  # (B, G, 3)
    knn = knn_indices(centers, points, 5)
    for b in range(2):
        for g in range(8):
            distances = [float(((points[b, i] - centers[b, g]) ** 2).sum()) for i in range(60)]
            assert knn[b, g].tolist() == sorted(range(60), key=distances.__getitem__)[:5]
            assert knn[b, g, 0] == fps[b, g]  # a center is its own nearest neighbour


def test_output_is_invariant_to_point_order(tiny_points_model):
    model = tiny_points_model().eval()
    torch.manual_seed(1)
    points = torch.randn(3, 300, 3)
    permuted = points[:, torch.randperm(300)]
    with torch.no_grad():
        torch.testing.assert_close(model(points).logits, model(permuted).logits, rtol=1e-5, atol=1e-5)


def test_shapes_losses_and_point_features(tiny_points_model):
    model = tiny_points_model().eval()
    out = model(torch.randn(2, 256, 3), labels=torch.tensor([0, 3]), output_hidden_states=True)
    assert out.logits.shape == (2, 6) and out.loss.ndim == 0
    assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape == (2, 17, 64)  # CLS + 16 groups
    with_normals = tiny_points_model(trunk_kwargs=dict(point_feature_size=3)).eval()
    assert with_normals(torch.randn(2, 256, 3), point_features=torch.randn(2, 256, 3)).logits.shape == (2, 6)
    small = PointBertLlamaForPointCloudClassification.from_parts("pointbert-small", None, variant="none", num_labels=40)
    config = small.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_groups,
            config.group_size) == (384, 12, 6, 64, 32)


def test_frozen_after_from_parts_training_and_reload(tiny_points_model, tmp_path):
    from transformers import Trainer, TrainingArguments

    model = tiny_points_model()
    names = [n for n, p in model.named_parameters() if ".frozen_lm.layers." in n]
    assert names and not any(p.requires_grad for n, p in model.named_parameters() if n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    cls_before = model.pointbert_llama.embeddings.cls_token.detach().clone()
    data = shapes3d_dataset(clouds_per_class=3, num_points=256)["train"]
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
        remove_unused_columns=False, label_names=["labels"],
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=PointCloudCollator(256, train=True))
    trainer.train()
    for name, tensor in model.named_parameters():
        if name in before:
            assert torch.equal(tensor, before[name]) and not tensor.requires_grad, name
    assert not torch.equal(model.pointbert_llama.embeddings.cls_token, cls_before)
    model.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForPointCloudClassification.from_pretrained(tmp_path / "model")
    assert type(reloaded) is PointBertLlamaForPointCloudClassification
    assert not any(p.requires_grad for n, p in reloaded.named_parameters() if ".frozen_lm.layers." in n)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["hf_frozenlm"] = None  # hf_frozenlm must not be importable: only the saved code may run
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    folder, points_path, out_path = sys.argv[1:4]
    points = torch.load(points_path)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    # The saved folder brings its own Auto class for the task transformers does not define.
    auto_class = get_class_from_dynamic_module("modeling_pointbert_llama.AutoModelForPointCloudClassification", folder)
    classifier = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    frozen = [p.requires_grad for n, p in classifier.named_parameters() if ".frozen_lm.layers." in n]
    with torch.no_grad():
        logits = classifier(points).logits
        pooled = base(points).pooler_output
    torch.save({"logits": logits, "pooled": pooled, "config_class": type(config).__module__, "frozen": frozen,
                "classes": [type(classifier).__module__, type(base).__name__]}, out_path)
    """
)


def test_save_reload_and_remote_code_in_a_fresh_process(tiny_points_model, tmp_path):
    model = tiny_points_model().eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_pointbert_llama.PointBertLlamaConfig",
        "AutoModel": "modeling_pointbert_llama.PointBertLlamaModel",
        "AutoModelForPointCloudClassification": "modeling_pointbert_llama.PointBertLlamaForPointCloudClassification",
    }
    points = torch.randn(2, 256, 3)
    reloaded = AutoModelForPointCloudClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(model(points).logits, reloaded(points).logits)
        assert torch.equal(AutoModel.from_pretrained(folder)(points).pooler_output,
                           model.pointbert_llama(points).pooler_output)
    torch.save(points, tmp_path / "points.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(folder), str(tmp_path / "points.pt"),
                    str(tmp_path / "out.pt")], check=True, env=env, cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["config_class"].startswith("transformers_modules.")
    assert result["classes"][0].startswith("transformers_modules.") and result["classes"][1] == "PointBertLlamaModel"
    assert result["frozen"] and not any(result["frozen"])
    with torch.no_grad():
        assert torch.equal(result["logits"], model(points).logits)
        assert torch.equal(result["pooled"], model.pointbert_llama(points).pooler_output)


def test_bad_input_gives_clear_errors(tiny_points_model):
    model = tiny_points_model().eval()
    with pytest.raises(ValueError, match="at least 16"):
        model(torch.randn(1, 10, 3))  # fewer points than a group needs
    bad = torch.randn(1, 256, 3)
    bad[0, 7, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(bad)
    with pytest.raises(ValueError, match=r"\(batch, points, 3\)"):
        model(torch.randn(1, 256, 6))
    with pytest.raises(ValueError, match="is not a preset"):
        PointBertLlamaForPointCloudClassification.from_parts("pointbert-huge", None, variant="none")
    with pytest.raises(DataError, match="NaN"):
        PointCloudCollator(32)([{"points": np.full((40, 3), np.nan)}])


def write_ply(path, points, binary):
    header = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex {len(points)}\n"
              "property float x\nproperty float y\nproperty float z\nproperty uchar red\nend_header\n")
    with open(path, "wb") as handle:
        handle.write(header.encode())
        if binary:
            rows = np.zeros(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1")])
            rows["x"], rows["y"], rows["z"], rows["red"] = points[:, 0], points[:, 1], points[:, 2], 7
            handle.write(rows.tobytes())
        else:
            handle.write("".join(f"{x} {y} {z} 7\n" for x, y, z in points).encode())


def test_point_cloud_files_and_layouts(tmp_path):
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", cloud)
    np.savez(tmp_path / "a.npz", points=cloud)
    write_ply(tmp_path / "a.ply", cloud, binary=False)
    write_ply(tmp_path / "b.ply", cloud, binary=True)
    np.savetxt(tmp_path / "a.txt", np.concatenate([cloud, cloud], axis=1), delimiter=",")
    for name in ("a.npy", "a.npz", "a.ply", "b.ply", "a.txt"):
        np.testing.assert_allclose(read_point_cloud(str(tmp_path / name))[:, :3], cloud, rtol=1e-5, err_msg=name)
    assert read_point_cloud(str(tmp_path / "b.ply")).shape == (50, 4)  # xyz + red
    # OFF (ModelNet40's header quirk "OFF<V> <F> <E>" included): a unit square in z=0 is sampled on its surface.
    (tmp_path / "square.off").write_text("OFF4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    sampled = read_point_cloud(str(tmp_path / "square.off"), mesh_samples=500)
    assert sampled.shape == (500, 3) and np.all(sampled[:, 2] == 0) and sampled[:, :2].min() >= 0
    (tmp_path / "junk.ply").write_text("not a point cloud")
    with pytest.raises(DataError, match="not a PLY"):
        read_point_cloud(str(tmp_path / "junk.ply"))
    # ModelNet40 raw layout: ROOT/<class>/{train,test}/<file>.
    for name in ("bowl", "cup"):
        for split, count in (("train", 6), ("test", 2)):
            os.makedirs(tmp_path / "modelnet" / name / split)
            for i in range(count):
                np.save(tmp_path / "modelnet" / name / split / f"{i}.npy", rng.normal(size=(40, 3)).astype(np.float32))
    splits = point_folder_dataset(str(tmp_path / "modelnet"))
    assert splits["train"].features["label"].names == ["bowl", "cup"]
    assert len(splits["test"]) == 4 and len(splits["train"]) + len(splits["validation"]) == 12
    # ModelNet40 HDF5 layout: ply_data_{train,test}*.h5 + shape_names.txt.
    h5py = pytest.importorskip("h5py")
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    for name, count in (("ply_data_train0.h5", 30), ("ply_data_test0.h5", 9)):
        with h5py.File(root / name, "w") as handle:
            handle["data"] = rng.normal(size=(count, 64, 3)).astype(np.float32)
            handle["label"] = (np.arange(count) % 3).reshape(-1, 1).astype(np.uint8)
    splits = h5_point_dataset(str(root))
    assert splits["train"].features["label"].names == ["airplane", "bathtub", "bed"]
    assert len(splits["test"]) == 9 and np.asarray(splits["test"][0]["points"]).shape == (64, 3)


def test_shapes3d_trains_well_above_chance(tiny_points_model):
    """The builtin 3D shapes: a tiny Point-BERT + SmolLM2's last layer learns them in a few epochs."""
    data = shapes3d_dataset(clouds_per_class=60, num_points=512, seed=0)
    train = list(data["train"])
    test = PointCloudCollator(256)(list(data["test"]))
    model = tiny_points_model()
    collate = PointCloudCollator(256, train=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    epochs, batch_size = 15, 16
    steps = epochs * (len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(train))
        for step in range(len(train) // batch_size):
            batch = collate([train[i] for i in order[step * batch_size:(step + 1) * batch_size]])
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test["point_values"]).logits.argmax(-1) == test["labels"]).float().mean().item()
    print(f"3D shapes: accuracy {accuracy:.3f}, chance {1 / len(SHAPES3D_LABELS):.3f}")
    assert accuracy >= 0.7  # measured here: 0.833 (chance 0.167); see README.md (Video and point clouds)
