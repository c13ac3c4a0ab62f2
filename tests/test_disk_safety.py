"""Crash and disk safety: what a killed run leaves, a full disk, a power cut, file modes, swapped files.

Each test sets up the failure the code must survive (a stale temporary file, ENOSPC, a replaced
image with its size and mtime kept) and checks the observable outcome.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from capfuse.utils import io as capio

HOUR = 3600


def _old(path: Path, size: int) -> Path:
    """A file of ``size`` bytes whose mtime is an hour ago: left behind by an earlier, killed run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\1" * size)
    then = time.time() - HOUR
    os.utime(path, (then, then))
    return path


def _replace_keeping_size_and_mtime(path: Path, new_bytes: bytes, *, in_place: bool) -> None:
    """What ``cp -p`` (in place) or ``rsync -a`` (new file renamed over) does to a changed image."""
    st = path.stat()
    assert len(new_bytes) == st.st_size and new_bytes != path.read_bytes()
    time.sleep(0.05)  # past the filesystem's timestamp tick, as any real later copy is
    if in_place:
        with open(path, "r+b") as fh:
            fh.write(new_bytes)
    else:
        other = path.with_name(f".{path.name}.rsync")
        other.write_bytes(new_bytes)
        os.replace(other, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _images(folder: Path, n: int, size: int = 32, fmt: str = "JPEG") -> list[str]:
    rng = np.random.default_rng(0)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / "data" / f"{i}.jpg", fmt)
        ids.append(f"{i}.jpg")
    return ids


# ---------------------------------------------------------------------------------------------
# 1. Stale temporary files


def test_stale_tmp_files_are_removed_and_live_ones_kept(tmp_path, caplog):
    from capfuse.utils.io import remove_stale_tmp

    stale = [
        _old(tmp_path / ".img-pooled.npy.ab12cd.tmp", 3 << 20),
        _old(tmp_path / "fold0" / ".done.json.x_9y.tmp", 100),
    ]
    keep = [_old(tmp_path / "img-pooled.npy", 10), _old(tmp_path / "notes.tmp", 10), _old(tmp_path / ".hidden", 10)]
    fresh = tmp_path / ".metrics.json.newone.tmp"  # written by this process: its stage is still running
    fresh.write_text("{}")
    held_open = _old(tmp_path / ".tokens.npy.open11.tmp", 4096)
    mapped = _old(tmp_path / ".mid1.npy.map222.tmp", 4096)
    holders = []
    try:
        mapping = "f = open(p, 'r+b'); m = mmap.mmap(f.fileno(), 0); f.close()"
        for path, how in ((held_open, "f = open(p, 'rb')"), (mapped, mapping)):
            # Another live process holds the file open (or only mapped, its descriptor closed).
            code = f"import mmap, sys, time; p = sys.argv[1]; {how}; print('ready', flush=True); time.sleep(120)"
            proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
            holders.append(proc)
            assert proc.stdout.readline().strip() == "ready"
        with caplog.at_level(logging.INFO, logger="capfuse"):
            freed = remove_stale_tmp(tmp_path)
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    assert freed == (3 << 20) + 100
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in [*keep, fresh, held_open, mapped])
    assert "2 stale temporary files" in caplog.text and "3.0 MiB" in caplog.text
    assert remove_stale_tmp(tmp_path / "missing") == 0  # a folder not written yet is fine


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny dataset and a two-model pipeline (caption and image linear probes) that runs in seconds."""
    from capfuse.data.demo import PRESETS, make_demo

    root = tmp_path_factory.mktemp("disk_safety")
    data = root / "data" / "mini"
    make_demo(data, **PRESETS["tiny"], seed=1)
    models = root / "configs" / "models"
    models.mkdir(parents=True)
    (models / "cap.yaml").write_text(yaml.safe_dump({"kind": "linear", "inputs": ["caption"], "C": 1.0}))
    (models / "img.yaml").write_text(
        yaml.safe_dump(
            {
                "kind": "linear",
                "inputs": ["image"],
                "C": 0.01,
                "image_encoder": {
                    "name": "tf_efficientnet_lite0",
                    "size": 32,
                    "weights": "package",
                    "backend": "torch",
                },
            }
        )
    )
    pipeline = root / "configs" / "pipeline.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {
                "models": ["cap", "img"],
                "folds": {"k": 3},
                "threshold": {"trials": 5},
                "ensemble": {"stack": {"num_threads": 1}},
            }
        )
    )
    return root, data, pipeline


def _cli(project, command: str) -> None:
    from capfuse.cli import main

    root, data, pipeline = project
    assert main([command, "--data", str(data), "--root", str(root), "--config", str(pipeline), "--quiet"]) == 0


@pytest.mark.slow
def test_each_stage_removes_the_stale_tmp_files_of_the_folder_it_writes(project, caplog):
    runs = project[0] / "runs" / "mini"
    _cli(project, "folds")
    cache = [
        _old(runs / "cache" / ".img-x-32px-orig-pooled.npy.k1ll3d.tmp", 2 << 20),
        _old(runs / "cache" / "unlabelled" / ".img-x-32px-orig-tokens4.npy.k1ll3d.tmp", 1000),
    ]
    with caplog.at_level(logging.INFO, logger="capfuse"):
        _cli(project, "embed")
    assert not any(p.exists() for p in cache)
    assert "2 stale temporary files" in caplog.text

    _cli(project, "train")  # a first run: the second one below finds every fold done
    model = [
        _old(runs / "img" / "fold0" / ".val_logits.npy.k1ll3d.tmp", 500),
        _old(runs / "img" / ".oof_logits.csv.k1ll3d.tmp", 50),
    ]
    other = _old(runs / "cap" / "fold1" / ".val_logits.npy.k1ll3d.tmp", 500)
    _cli(project, "train")
    assert not any(p.exists() for p in [*model, other])

    _cli(project, "stack")
    ensemble = _old(runs / "ensemble" / ".stack.json.k1ll3d.tmp", 70)
    _cli(project, "stack")
    assert not ensemble.exists() and (runs / "ensemble" / "stack.json").exists()
    ensemble = _old(runs / "ensemble" / ".thresholds.json.k1ll3d.tmp", 70)
    _cli(project, "thresholds")
    assert not ensemble.exists() and (runs / "ensemble" / "thresholds.json").exists()


# ---------------------------------------------------------------------------------------------
# 2. Memory-mapped arrays are allocated before they are mapped


def _no_space(fd, offset, length):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_a_clear_error_before_the_image_arrays_are_mapped(tmp_path, monkeypatch):
    from capfuse.features.image import ImageEncoderSpec, embed_image_features

    ids = _images(tmp_path, 4)
    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=32, weights="none", backend="torch", grid=2)
    cache = tmp_path / "cache"
    with pytest.raises(OSError) as info:
        embed_image_features(tmp_path, ids, np.ones(4, bool), spec, cache, quiet=True)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    # Names the artefact, the bytes it needs and the bytes the disk has.
    assert "img-tf_efficientnet_lite0-32px-orig-" in message and ".npy" in message
    assert "needs" in message and "free" in message and str(cache) in message
    assert sorted(p.name for p in cache.iterdir() if p.is_file()) == []  # no temporary file, no sidecar


def test_a_full_disk_is_a_clear_error_for_the_caption_arrays(tmp_path, monkeypatch):
    from capfuse.encoders.text import TextEncoderSpec
    from capfuse.features.text import embed_captions

    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    with pytest.raises(OSError, match=r"txt-minilm-8tok-all\.tokens\.npy.*needs .* free"):
        embed_captions(["a dog", "a cat on a mat"], TextEncoderSpec(max_len=8), tmp_path, key="all", quiet=True)
    # No array, temporary file or sidecar; the encoder's ONNX export (written whole, atomically,
    # before the arrays are reserved) may stay in its own folder, as for the image cache.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".npy"]


def test_allocated_npy_reads_back_as_a_normal_array(tmp_path):
    from capfuse.utils.io import allocate_npy

    for shape, dtype in (((3, 5), np.float16), ((2, 4, 3), np.uint8), ((0, 7), np.float16)):
        path = tmp_path / f"a{len(shape)}{np.dtype(dtype).name}.npy"
        with capio.atomic_path(path) as tmp:
            arr = allocate_npy(tmp, dtype, shape)
            arr[...] = np.arange(arr.size).reshape(shape) % 7
            arr.flush()
            del arr
        back = np.load(path, mmap_mode="r")
        assert back.shape == shape and back.dtype == dtype
        assert np.array_equal(back, np.arange(int(np.prod(shape))).reshape(shape) % 7)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true")


def _can(cmd: list[str]) -> bool:
    return shutil.which(cmd[0]) is not None and subprocess.run(cmd, capture_output=True).returncode == 0


@dataclass(frozen=True)
class FullDisk:
    folder: Path  # a 1 MiB disk for the script run by ``command``
    prefix: tuple[str, ...] = ()  # what the script's command starts with
    setup: str = ""  # Python the script runs before it writes
    errno: int = errno.ENOSPC  # what the kernel answers when the disk is full

    def command(self, script: str) -> list[str]:
        return [*self.prefix, sys.executable, "-c", self.setup + "\n" + script]


@pytest.fixture()
def tiny_disk(tmp_path):
    """A really full (1 MiB) disk for a script run in its own process.

    A real tmpfs where this user may mount one (root); else a tmpfs in a user namespace of its
    own (``unshare``, no root needed); else, where neither is allowed (a container without
    CAP_SYS_ADMIN), a 1 MiB file-size limit (RLIMIT_FSIZE): the kernel refuses the same block
    reservation, with EFBIG. Never a skip under CI=true: the Guarantees page makes this promise."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    tmpfs = ["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
    if _can(["mount", *tmpfs]):
        try:
            yield FullDisk(folder)
        finally:
            subprocess.run(["umount", str(folder)], check=False)
    elif _can(["unshare", "--user", "--map-root-user", "--mount", "true"]):
        mount_then_run = f'mount {" ".join(tmpfs)} && exec "$@"'
        yield FullDisk(folder, ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount_then_run, "sh"))
    elif sys.platform.startswith("linux"):
        limit = "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))"
        setup = f"import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); {limit}"
        yield FullDisk(folder, setup=setup, errno=errno.EFBIG)
    elif _in_ci():
        pytest.fail("no way to make a full disk here (mount, unshare, RLIMIT_FSIZE): the full-disk check cannot run")
    else:
        pytest.skip("no way to make a full disk here (mount, unshare, RLIMIT_FSIZE); fails instead under CI=true")


@pytest.mark.slow
def test_a_really_full_disk_is_a_python_error_not_sigbus(tmp_path, tiny_disk):
    ids = _images(tmp_path, 40)  # 40 rows x 16 tokens x 1280 float16 = 1.6 MB: more than the 1 MiB disk
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from capfuse.features.image import ImageEncoderSpec, embed_image_features
        spec = ImageEncoderSpec(name="tf_efficientnet_lite0", size=32, weights="none", backend="torch", grid=4)
        cache = Path({str(tiny_disk.folder / "cache")!r})
        try:
            embed_image_features(Path({str(tmp_path)!r}), {ids!r}, np.ones({len(ids)}, bool), spec,
                                 cache, outputs=("tokens",), quiet=True)
        except OSError as exc:
            print("ERROR", exc.errno, exc)
            # Listed from inside: a user namespace's mount ends with the process.
            print("LEFT", sorted(p.name for p in cache.iterdir()))
            sys.exit(3)
        print("NO ERROR")
    """)
    # A separate process: on failure it dies of SIGBUS, which must not take pytest with it.
    done = subprocess.run(tiny_disk.command(script), capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-2000:]}"
    assert f"ERROR {tiny_disk.errno} " in done.stdout and "LEFT []" in done.stdout  # the partial file is gone
    if tiny_disk.errno == errno.ENOSPC:  # a full disk names the array, what it needs and what is free
        assert "tokens4.npy" in done.stdout and "needs 1.6 MiB" in done.stdout and "free" in done.stdout


# ---------------------------------------------------------------------------------------------
# 3. Artefacts are on disk before they are renamed into place


@pytest.fixture()
def io_calls(monkeypatch):
    """Every fsync (with what its descriptor points at) and replace, in order."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        calls.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name a descriptor's file")
def test_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, io_calls):
    import pandas as pd

    target = tmp_path / "run" / "done.json"
    capio.write_json(target, {"seconds": 1.5})
    (tmp_file,) = [c[1] for c in io_calls if c[0] == "replace"]
    assert io_calls == [("fsync", tmp_file), ("replace", tmp_file, str(target)), ("fsync", str(target.parent))]

    io_calls.clear()
    capio.write_csv(tmp_path / "sub.csv", pd.DataFrame({"ImageID": ["1.jpg"], "Labels": ["1 2"]}))
    assert [c[0] for c in io_calls] == ["fsync", "replace", "fsync"]

    io_calls.clear()
    capio.write_text(tmp_path / "scratch.txt", "x", durable=False)
    assert [c[0] for c in io_calls] == ["replace"]


def test_a_failed_fsync_is_an_error_and_leaves_the_old_artefact(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    capio.write_json(target, {"v": 1})

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)  # the disk could not store the new bytes
    with pytest.raises(OSError):
        capio.write_json(target, {"v": 2})
    assert capio.read_json(target) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


# ---------------------------------------------------------------------------------------------
# 4. Artefacts get the user's umask, not mkstemp's 0600


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_artefacts_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        capio.write_json(tmp_path / "metrics.json", {"a": 1})
        capio.write_npy(tmp_path / "val_logits.npy", np.zeros(3))
        with capio.atomic_path(tmp_path / "model.onnx") as tmp:  # a file the body rewrites itself
            tmp.write_bytes(b"onnx")
    finally:
        os.umask(old)
    for name in ("metrics.json", "val_logits.npy", "model.onnx"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_umask_without_proc_is_read_once_and_restored(tmp_path, monkeypatch):
    # Where /proc cannot tell the umask, it is read by setting it, once, and put back.
    monkeypatch.setattr(capio, "_PROC_STATUS", tmp_path / "no-such-file")
    capio._swapped_umask.cache_clear()
    old = os.umask(0o027)
    try:
        capio.write_json(tmp_path / "a.json", {})
        assert os.umask(0o027) == 0o027  # still the user's umask
    finally:
        os.umask(old)
        capio._swapped_umask.cache_clear()
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


# ---------------------------------------------------------------------------------------------
# 5. Caches notice replaced files even when size and mtime are kept


@pytest.mark.parametrize("in_place", [True, False], ids=["cp -p", "rsync -a"])
def test_image_features_checksum_sees_a_replaced_image(tmp_path, in_place):
    from capfuse.features.image import inputs_checksum

    ids = _images(tmp_path, 3, fmt="BMP")  # BMP: same size on disk for any pixels
    ok = np.ones(3, bool)
    before = inputs_checksum(tmp_path, ids, ok)
    assert inputs_checksum(tmp_path, ids, ok) == before
    path = tmp_path / "data" / ids[1]
    raw = bytearray(path.read_bytes())
    raw[-10:] = bytes(255 - b for b in raw[-10:])  # ten pixel bytes changed
    _replace_keeping_size_and_mtime(path, bytes(raw), in_place=in_place)
    assert inputs_checksum(tmp_path, ids, ok) != before


@pytest.mark.parametrize("in_place", [True, False], ids=["cp -p", "rsync -a"])
def test_validation_rechecks_a_replaced_image(tmp_path, in_place):
    from capfuse.data.demo import make_demo
    from capfuse.data.validate import validate_dataset

    data = tmp_path / "mini"
    make_demo(data, n_train=12, n_test=4, size=32, seed=0)
    first = validate_dataset(data, cache_dir=tmp_path / "runs")
    victim = first.train["ImageID"].iloc[0]
    path = data / "data" / victim
    _replace_keeping_size_and_mtime(path, b"\0" * path.stat().st_size, in_place=in_place)
    again = validate_dataset(data, cache_dir=tmp_path / "runs")
    # Re-checked, not the cached verdict: the broken image's row is quarantined.
    assert victim not in set(again.train["ImageID"]) and victim in set(again.quarantine["ImageID"])


def test_caption_encoder_folder_fingerprint_sees_a_replaced_weights_file(tmp_path):
    from capfuse.encoders.text import text_encoder_sources

    folder = tmp_path / "my-encoder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"A" * 64)
    before = text_encoder_sources(str(folder))[0].source
    _replace_keeping_size_and_mtime(folder / "model.safetensors", b"B" * 64, in_place=True)
    assert text_encoder_sources(str(folder))[0].source != before


@pytest.mark.slow
def test_new_weights_under_the_same_name_are_re_exported_and_re_embedded(tmp_path, monkeypatch):
    import torch

    import capfuse.features.image as features
    from capfuse.encoders.image import create_backbone

    ids = _images(tmp_path, 4)
    spec = features.ImageEncoderSpec(name="tf_efficientnet_lite0", size=32, weights="package", backend="onnx", grid=2)
    ok = np.ones(4, bool)
    first = features.embed_images(tmp_path, ids, ok, spec, tmp_path / "cache", quiet=True)
    first = (np.array(first[0]), first[1])

    def new_weights(name, *, weights="auto", num_classes=0, **kwargs):
        model, source = create_backbone(name, weights=weights, num_classes=num_classes, **kwargs)
        with torch.no_grad():  # the same file name ("package:<file>"), other numbers in it
            for p in model.parameters():
                p.mul_(0.5)
        return model, source

    monkeypatch.setattr(features, "build_image", new_weights)
    second = features.embed_images(tmp_path, ids, ok, spec, tmp_path / "cache", quiet=True)
    assert second[1] != first[1]  # the features are not served from the old weights' cache
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2  # nor from the old export
    model, _ = new_weights("tf_efficientnet_lite0", weights="package")
    torch_spec = features.ImageEncoderSpec(**{**spec.__dict__, "backend": "torch"})
    expected = features.embed_images(tmp_path, ids, ok, torch_spec, tmp_path / "torch_cache", quiet=True)[0]
    assert np.allclose(np.asarray(second[0], np.float32), np.asarray(expected, np.float32), atol=2e-2)
    assert not np.allclose(np.asarray(first[0], np.float32), np.asarray(expected, np.float32), atol=2e-2)


def test_finetune_fingerprint_sees_a_replaced_image(project):
    from capfuse.data.dataset import load_dataset
    from capfuse.features.store import FeatureStore
    from capfuse.paths import Paths

    root, data, _ = project
    ds = load_dataset(Paths(data_dir=data, root=root), {}, quiet=True)
    cfg = {
        "kind": "net",
        "finetune": True,
        "inputs": ["image", "caption"],
        "name": "ft",
        "image_encoder": {"name": "tf_efficientnet_lite0"},
    }
    before = FeatureStore(ds, True, {"ft": cfg}).for_model(cfg)["fingerprint"]
    path = data / "data" / ds.train_ids[0]
    raw = path.read_bytes()
    _replace_keeping_size_and_mtime(path, raw[:-4] + bytes(255 - b for b in raw[-4:]), in_place=False)
    try:
        assert FeatureStore(ds, True, {"ft": cfg}).for_model(cfg)["fingerprint"] != before
    finally:
        _replace_keeping_size_and_mtime(path, raw, in_place=False)  # the module's other tests read this image
