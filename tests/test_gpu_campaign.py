"""The GPU campaign's CPU-checkable parts: the data pack, weight shards, the fast paths (channels_last,
bf16 autocast) against the plain mirror, the two-phase trainer, and the campaign's refusal without a GPU.

CUDA graphs and the throughput probe need a GPU; what a lent GPU measured is in docs/TRAINING.md.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest

from conftest import REPO
from test_gpu_train import run_torch

#: For the scripts below, after `model = net.ELFVC(...)`: the torch mirror's zero-initialized output
#: heads moved (as conftest.perturb_heads does for Keras), so every P-frame path carries signal.
PERTURB_HEADS = r"""
with torch.no_grad():
    for name, p in model.named_parameters():
        if "head" in name and name.endswith("kernel"):
            p.add_(0.01 * torch.randn_like(p))
"""

SCRIPT_FAST_PATHS = r"""
import json, sys, torch
from gpu_train import net
from model.config import get_config
torch.manual_seed(0)
config = get_config("base", encoder_channels=16, iframe_decoder_channels=16, flow_decoder_channels=8,
                    residue_decoder_channels=16, latent_channels=16, hyper_channels=8, hyper_latent_channels=8,
                    state_channels=8, predictor_channels=8, motion_search_radius=4).to_dict()
model = net.ELFVC(config).eval()
""" + PERTURB_HEADS + r"""
frames = torch.rand(2, 3, 3, 64, 128)
levels = torch.tensor([[0.0, 2.5, 7.0], [7.0, 3.25, 0.5]])
with torch.no_grad():
    plain = model.forward_gop(frames, levels, "round")
    net.CHANNELS_LAST = True
    cl = model.forward_gop(frames, levels, "round")
    net.CHANNELS_LAST = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = model.forward_gop(frames, levels, "round")
print(json.dumps({
    "cl_recon": float((plain.reconstructions - cl.reconstructions).abs().max()),
    "cl_bits": float(((plain.bits - cl.bits).abs() / plain.bits).max()),
    "bf_recon": float((plain.reconstructions - bf.reconstructions).abs().mean()),
    "bf_bits_dtype": str(bf.bits.dtype), "bf_recon_dtype": str(bf.reconstructions.dtype),
    "bf_bits_rel": float(((plain.bits - bf.bits).abs() / plain.bits).mean()),
}))
"""


def test_fast_paths_match_the_plain_mirror():
    """channels_last computes the same function (float32 reordering only); bf16 autocast keeps
    the rates, quantization and outputs in float32 and stays near the float32 result."""
    result = run_torch(["-c", SCRIPT_FAST_PATHS])
    assert result.returncode == 0, result.stderr[-2000:]
    d = json.loads(result.stdout.strip().splitlines()[-1])
    assert d["cl_recon"] < 1e-5 and d["cl_bits"] < 1e-5, d
    assert d["bf_bits_dtype"] == d["bf_recon_dtype"] == "torch.float32", d
    # bf16 has an 8-bit mantissa (relative error 2^-9 per operation): a few 1e-3 after a network.
    assert 0 < d["bf_recon"] < 2e-2 and d["bf_bits_rel"] < 5e-2, d


def _fake_train_set(root: pathlib.Path, videos: int = 3):
    import imageio_ffmpeg
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images" / "sub").mkdir(parents=True)
    (root / "video").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (300 + 40 * i, 500, 3), dtype=np.uint8)).save(root / "images" / "sub" / f"p{i}.png")
    for i in range(videos):
        writer = imageio_ffmpeg.write_frames(str(root / "video" / f"v{i}.mp4"), (128, 128), quality=9, macro_block_size=1)
        writer.send(None)
        base = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
        for t in range(6):
            writer.send(np.ascontiguousarray(base[t : t + 128, t : t + 128]))
        writer.close()


def _tiny_base_config(path: pathlib.Path) -> pathlib.Path:
    """The `base` topology at a few channels per layer, as a config.json: fast CPU training runs."""
    from model.config import get_config

    path.write_text(json.dumps(get_config(
        "base", encoder_channels=16, iframe_decoder_channels=16, flow_decoder_channels=8, residue_decoder_channels=16,
        latent_channels=16, hyper_channels=8, hyper_latent_channels=8, state_channels=8, predictor_channels=8).to_dict()))
    return path


def test_pack_fits_its_budget_and_records_what_travelled(tmp_path):
    from gpu_train import pack

    _fake_train_set(tmp_path / "train")
    photos_only = sum(len(pack.encode_photo(p, 256, 95)[0]) for p in sorted((tmp_path / "train/images").rglob("*.png")))
    video_size = (tmp_path / "train/video/v0.mp4").stat().st_size
    budget_mb = (photos_only + 1.5 * video_size) / 2**20  # room for one video, not two
    assert pack.main([f"--train={tmp_path / 'train'}", f"--out={tmp_path / 'p'}", f"--max_mb={budget_mb}", "--photo_side=256"]) == 0
    m = json.loads((tmp_path / "p" / "MANIFEST.json").read_text())
    assert len(m["photos"]) == 3 and all(max(x["size"]) <= 256 for x in m["photos"])
    assert len(m["videos"]) + len(m["videos_left_out"]) == 3 and len(m["videos"]) >= 1
    on_disk = sum(f.stat().st_size for f in (tmp_path / "p").rglob("*") if f.is_file() and f.name != "MANIFEST.json")
    assert on_disk == m["total_bytes"] <= budget_mb * 2**20
    # An existing folder is refused, and so is a training set that is not there.
    assert pack.main([f"--train={tmp_path / 'train'}", f"--out={tmp_path / 'p'}"]) == 1
    assert pack.main([f"--train={tmp_path / 'none'}", f"--out={tmp_path / 'q'}"]) == 1
    assert not (tmp_path / "q").exists()


SCRIPT_SHARDS = r"""
import sys, numpy as np, torch
from gpu_train import weights
from gpu_train.net import ELFVC
from model.config import get_config
m = ELFVC(get_config("small").to_dict())
files = weights.save_npz_shards(m, sys.argv[1], max_bytes=2**20)
assert len(files) >= 6, files
again = ELFVC(get_config("small").to_dict())
weights.load_npz(again, sys.argv[1])
for (k, a), (_, b) in zip(m.state_dict().items(), again.state_dict().items()):
    assert torch.equal(a, b), k
half = weights.save_npz_shards(m, sys.argv[2], dtype=np.float16)
arrays = weights.read_arrays(sys.argv[2])
assert arrays["iframe.analysis.stem.kernel"].dtype == np.float16 and arrays["step"].dtype == np.int64
weights.load_npz(again, sys.argv[2])
assert again.iframe.analysis.stem.kernel.dtype == torch.float32
# A smaller set replaces a larger one: no stale shard is left to be read with it.
weights.save_npz_shards(m, sys.argv[1], max_bytes=2**30)
assert len(list(__import__("pathlib").Path(sys.argv[1]).glob("*.npz"))) == 1
print("ok", len(files), len(half))
"""


def test_weight_shards_round_trip(tmp_path):
    result = run_torch(["-c", SCRIPT_SHARDS, str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


def test_two_phase_training_on_cpu(tmp_path):
    """The I-frame phase then the GOP phase, bf16 autocast: both phases log, only GOP steps advance
    the model step, the weights come back as shards that load."""
    _fake_train_set(tmp_path / "train", videos=2)
    config = _tiny_base_config(tmp_path / "config.json")
    result = run_torch([
        "-m", "gpu_train.train", f"--config={config}", f"--data={tmp_path / 'train/video'}",
        f"--photos={tmp_path / 'train/images'}", f"--out_dir={tmp_path / 'out'}", "--minutes=10", "--max_steps=8",
        "--batch=1", "--gop=2", "--crop=64", "--image_frac=0.5", "--image_batch=2", "--image_crop=64", "--device=cpu",
        "--log_every=2", "--precision=bf16", "--clip_norm=1", "--workers=2",
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert (progress["image_steps"], progress["gop_steps"]) == (4, 4), progress  # --max_steps=8, half each
    assert progress["model_step"] == progress["gop_steps"]
    phases = {r["phase"] for r in progress["log"]}
    assert phases == {"image", "gop"}, phases
    gop_log = [r for r in progress["log"] if r["phase"] == "gop"]
    assert any(v is not None for r in gop_log for v in r["p_psnr"])
    assert progress["flops_per_step"]["gop"] > progress["flops_per_step"]["image"] > 0
    assert "[image]" in result.stdout and "[gop]" in result.stdout
    # The GOP phase restarts Adam and warms its learning rate up from ~0 (--phase_warmup=200 steps)
    image_lr = [r["lr"] for r in progress["log"] if r["phase"] == "image"]
    assert max(image_lr) == 1e-4 and gop_log[0]["lr"] < 0.2 * 1e-4, (image_lr, gop_log[0]["lr"])  # --lr default 1e-4


SCRIPT_RESTART = r"""
import json, torch
from types import SimpleNamespace
from gpu_train.train import Stepper
model = torch.nn.Linear(3, 2)
args = SimpleNamespace(lr=0.1, clip_norm=0.0)
stepper = Stepper(model, None, None, args, torch.device("cpu"), None, capturable=False)
first = []
for trial in range(2):
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(3 if trial == 0 else 1):
        stepper.opt.zero_grad()
        (model.weight.sum() * (10.0 if trial == 0 else 1.0)).backward()
        stepper.opt.step()
    first.append(model.weight[0, 0].item())
    stepper.restart_optimizer()
state = next(iter(stepper.opt.state.values()))
# The campaign's default warm start (gpu_train/warm/base's shards when committed, else
# runtime/checkpoints/base/weights.npz, keyed by state_dict names) loads strictly.
import pathlib
from gpu_train import campaign, net
from gpu_train.weights import load_npz, weights_folder
init = campaign.default_init("base")
mirror = net.ELFVC(json.loads((weights_folder(init) / "config.json").read_text()))
load_npz(mirror, init)
print(json.dumps({"first": first, "step": float(state["step"]), "v": float(state["exp_avg_sq"].abs().max()),
                  "init": init, "init_step": int(mirror.step)}))
"""


def test_restarted_optimizer_steps_as_if_new():
    """After restart_optimizer the next Adam step is a first step: lr times the gradient's sign,
    whatever the earlier gradients' scale (a stale second moment would shrink it 10x here)."""
    result = run_torch(["-c", SCRIPT_RESTART])
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["step"] == 0 and out["v"] == 0, out
    assert out["first"][1] == pytest.approx(1.0 - 0.1, abs=1e-6), out
    # The campaign starts from gpu_train/warm/base/ when committed (training ahead of the shipped
    # model), else from the shipped compact weights; either loads.
    shipped_step = json.loads((REPO / "runtime" / "checkpoints" / "base" / "training.json").read_text())["model_step"]
    if (REPO / "gpu_train" / "warm" / "base").is_dir():
        assert out["init"].endswith("gpu_train/warm/base") and out["init_step"] > shipped_step, out
    else:
        assert out["init"].endswith("runtime/checkpoints/base/weights.npz") and out["init_step"] == shipped_step, out


def test_campaign_without_a_gpu_stops_at_once():
    result = run_torch(["-m", "gpu_train.campaign", "--out=/tmp/never-written"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "python3 -m gpu_train.campaign: error: no CUDA GPU here; this command is for a lent GPU machine (it spent no time)"
    ]
    assert not pathlib.Path("/tmp/never-written").exists()


@pytest.mark.slow  # ~19 s, two torch processes under torchrun: multi-GPU breadth
def test_two_processes_train_as_one(tmp_path):
    """Data parallelism under torchrun (gloo, two CPU processes on localhost): different data on
    each rank, gradients averaged, so both end with identical weights (the trainer itself checks
    this and fails if they diverge; here the two saved sets are compared too)."""
    import random

    _fake_train_set(tmp_path / "train", videos=2)
    config = _tiny_base_config(tmp_path / "config.json")
    result = run_torch([
        "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={random.randint(20000, 60000)}",
        "-m", "gpu_train.train", f"--config={config}", f"--data={tmp_path / 'train/video'}",
        f"--out_dir={tmp_path / 'out'}", "--minutes=10", "--max_steps=3", "--batch=1", "--gop=3", "--crop=64",
        "--device=cpu", "--log_every=2", "--clip_norm=1", "--precision=fp32",  # not auto: the same on every CPU
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas: 2 processes, largest weight difference from rank 0: 0\n" in result.stdout
    from gpu_train.weights import read_arrays

    rank0, rank1 = read_arrays(tmp_path / "out"), read_arrays(tmp_path / "out" / "rank1")
    assert sorted(rank0) == sorted(rank1)
    for key in rank0:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)
    p0 = json.loads((tmp_path / "out" / "progress.json").read_text())
    p1 = json.loads((tmp_path / "out" / "rank1" / "progress.json").read_text())
    assert p0["gop_steps"] == p1["gop_steps"] == 3 and p0["replicas"] == 2
    # Each rank saw its own crops: their logged losses differ.
    assert [r["loss"] for r in p0["log"]] != [r["loss"] for r in p1["log"]]


SCRIPT_WARP = r"""
import json, torch
from gpu_train import net
torch.manual_seed(1)
worst = [0.0, 0.0, 0.0]
for h, w in [(64, 96), (48, 80)]:
    img = torch.rand(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    flow = torch.cat([torch.randn(2, 2, h, w, dtype=torch.float64) * 6,  # beyond the borders too
                      torch.rand(2, 1, h, w, dtype=torch.float64) * 10 - 1], 1).requires_grad_(True)
    fused, ref = net.scale_space_warp(img, flow), net.scale_space_warp_reference(img, flow)
    g1, g2 = torch.autograd.grad(fused.sum(), [img, flow]), torch.autograd.grad(ref.sum(), [img, flow])
    worst = [max(worst[0], float((fused - ref).abs().max())),
             max(worst[1], float((g1[0] - g2[0]).abs().max())), max(worst[2], float((g1[1] - g2[1]).abs().max()))]
print(json.dumps(worst))
"""


def test_fused_warp_is_the_gather_warp():
    """The one-grid_sample warp computes model.warp's function and its gradients (float64: to
    rounding), flows past the borders and blur beyond the last level included."""
    result = run_torch(["-c", SCRIPT_WARP])
    assert result.returncode == 0, result.stderr[-2000:]
    value, grad_image, grad_flow = json.loads(result.stdout.strip().splitlines()[-1])
    assert value < 1e-12 and grad_image < 1e-11 and grad_flow < 1e-11, (value, grad_image, grad_flow)


SCRIPT_BLUR = r"""
import json, torch
from gpu_train import net
torch.manual_seed(2)
worst = [0.0, 0.0]
for h, w in [(40, 56), (64, 96)]:
    img = torch.rand(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    for sigma in (1.0, 2.0, 4.0, 8.0):  # radius 3 to 24
        net.BLUR_MATMUL_MAX_SIDE = 512
        product = net.gaussian_blur(img, sigma)
        net.BLUR_MATMUL_MAX_SIDE = 0
        conv = net.gaussian_blur(img, sigma)
        weights = torch.rand_like(conv)
        g1, g2 = (torch.autograd.grad((y * weights).sum(), img)[0] for y in (product, conv))
        worst = [max(worst[0], float((product - conv).abs().max())), max(worst[1], float((g1 - g2).abs().max()))]
print(json.dumps(worst))
"""


def test_blur_by_matrix_products_is_the_convolution():
    """The CPU's blur by two matrix products (borders folded into the matrices) computes the
    separable convolution over symmetric padding, and its gradient (float64: to rounding)."""
    result = run_torch(["-W", "error:::gpu_train.net", "-c", SCRIPT_BLUR])  # nor a warning (a read-only array once)
    assert result.returncode == 0, result.stderr[-2000:]
    value, grad = json.loads(result.stdout.strip().splitlines()[-1])
    assert value < 1e-13 and grad < 1e-13, (value, grad)


@pytest.mark.slow  # ~13 s, a diagnostic the documented campaign call turns off (--diagnose_s=0)
def test_diagnose_trains_both_autoencoders_on_cpu(tmp_path):
    _fake_train_set(tmp_path / "train", videos=1)
    result = run_torch([
        "-m", "gpu_train.diagnose", f"--photos={tmp_path / 'train/images'}", "--seconds=1", "--batch=2", "--crop=128",
        f"--out={tmp_path / 'd.json'}", "--device=cpu",
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    d = json.loads((tmp_path / "d.json").read_text())
    assert set(d["results"]) == {"elf", "plain"}
    for r in d["results"].values():
        assert r["steps"] >= 1 and r["parameters"] > 0
    # Same bottleneck: the ELF transforms have the config's parameter budget (base: 2.48M), the plain
    # autoencoder of four 5x5 convolutions each way about half of it (1.16M).
    elf, plain = d["results"]["elf"]["parameters"], d["results"]["plain"]["parameters"]
    assert elf > 2e6 and 0.3 < plain / elf < 0.7, (elf, plain)
    bad = run_torch(["-m", "gpu_train.diagnose", f"--photos={tmp_path}", "--out=/tmp/x.json", "--device=cuda"])
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


# -- the prepared call in docs/GPU.md stays runnable ----------------------------------------
def _documented_commands(module: str):
    """Every command line of docs/GPU.md's bash blocks that runs `module` (backslash continuations
    joined), cut at the first pipe or redirection, as argument lists after the module name."""
    import re
    import shlex

    text = (REPO / "docs" / "GPU.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0]
            if f"-m {module} " not in line:
                continue
            words = shlex.split(line.split(f"-m {module} ", 1)[1].split("2>&1")[0].split("|")[0])
            commands.append([w.replace("$OUT", "/tmp/out") for w in words])
    return commands


def test_the_documented_campaign_commands_parse():
    """The GPU call is prepared ahead and run without thought: every campaign command docs/GPU.md
    gives parses (campaign flags, and the trainer flags after `--` with the trainer's parser)."""
    from gpu_train import campaign, train

    commands = _documented_commands("gpu_train.campaign")
    assert len(commands) >= 2, commands  # "The one call" and "The next call"
    for argv in commands:
        args = campaign.build_parser().parse_args(argv)
        train.build_parser().parse_args(["--config=c.json", "--data=d", "--out_dir=o", "--minutes=1", *args.train_flags])
        assert args.image_frac < 1 and args.budget_s <= 560, argv  # within a 590 s call


def test_the_documented_pack_fits_one_call(tmp_path):
    """docs/GPU.md's pack command on the real training set, plus the tracked files that travel
    with it, stays under a call's 64 MiB (the photos outgrew the old defaults once)."""
    train_dir = REPO.parent / "shared" / "data" / "train"
    if not (train_dir / "images").is_dir():
        pytest.skip(f"{train_dir} is missing (../shared/data, see its README)")
    from gpu_train import pack

    variants = {tuple(a for a in argv if not a.startswith(("--out=", "--seed="))) for argv in _documented_commands("gpu_train.pack")}
    assert len(variants) == 1, variants  # one pack recipe, whatever the seed
    (argv,) = variants
    assert pack.main([f"--train={train_dir}", f"--out={tmp_path / 'pack'}", "--seed=0", *argv]) == 0
    packed = sum(f.stat().st_size for f in (tmp_path / "pack").rglob("*") if f.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    tracked_bytes = sum((REPO / p.decode()).stat().st_size for p in tracked if p and (REPO / p.decode()).is_file())
    assert packed + tracked_bytes < 64 * 2**20, (
        f"the pack ({packed / 2**20:.1f} MiB) and the tracked files ({tracked_bytes / 2**20:.1f} MiB) exceed a call's 64 MiB: "
        "keep extra weights (warm copies) out of the tree, or lower the pack's --max_mb in docs/GPU.md")


def test_iframe_digest_keys_on_the_iframe_weights_only():
    from gpu_train.weights import iframe_digest

    rng = np.random.default_rng(0)
    arrays = {"iframe.a.kernel": rng.normal(size=(3, 3)).astype(np.float16).astype(np.float32),
              "iframe.b.bias": np.zeros(4, np.float32), "residue.c.kernel": rng.normal(size=(2,)).astype(np.float32),
              "step": np.array(7)}  # fmt: skip
    digest = iframe_digest(arrays)
    fp16 = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in arrays.items()}
    assert iframe_digest(fp16) == digest  # the compact FP16 copy of FP16-exact weights
    assert iframe_digest({**arrays, "residue.c.kernel": arrays["residue.c.kernel"] + 1, "step": np.array(8)}) == digest
    changed = arrays["iframe.b.bias"].copy()
    changed[2] = 1e-3
    assert iframe_digest({**arrays, "iframe.b.bias": changed}) != digest


def test_a_named_config_continues_with_the_shipped_config(tmp_path):
    """`--config=base` continues the shipped weights with the shipped config.json (its
    block_motion_upsample is "bilinear", model/config.py's recipe says "nearest": training the
    shipped weights with the recipe would refit the flow decoder to the other upsampling); from
    scratch, the recipe; a config.json is used as given."""
    from gpu_train import campaign
    from model.config import get_config

    shipped = REPO / "runtime" / "checkpoints" / "base"
    path, init = campaign.resolve_config("base", "auto", tmp_path / "a")
    warm = REPO / "gpu_train" / "warm" / "base"
    if warm.is_dir():
        assert init == str(warm) and json.loads(path.read_text()) == json.loads((warm / "config.json").read_text())
    else:
        assert init == str(shipped / "weights.npz") and path == shipped / "config.json"
    assert json.loads(path.read_text())["block_motion_upsample"] == "bilinear"
    assert get_config("base").block_motion_upsample == "nearest"  # else this test checks nothing
    path, init = campaign.resolve_config("base", "", tmp_path / "b")
    assert init == "" and json.loads(path.read_text()) == get_config("base").to_dict()
    given = tmp_path / "c.json"
    given.write_text(json.dumps({**get_config("small").to_dict(), "name": "small"}))
    path, init = campaign.resolve_config(str(given), "runs/x", tmp_path / "d")
    assert (path, init) == (given, "runs/x")
    lone = tmp_path / "lone"  # weights without a config beside them: the recipe
    lone.mkdir()
    path, _ = campaign.resolve_config("small", str(lone / "w.npz"), tmp_path / "e")
    assert json.loads(path.read_text()) == get_config("small").to_dict()
    run = tmp_path / "run"  # a training run's folder: the config its progress.json recorded
    run.mkdir()
    recorded = {**get_config("base").to_dict(), "block_motion_upsample": "bilinear"}
    (run / "progress.json").write_text(json.dumps({"model_step": 5, "config": recorded}))
    path, init = campaign.resolve_config("base", str(run), tmp_path / "f")
    assert init == str(run) and json.loads(path.read_text()) == recorded


def test_trainer_names_a_config_switch_against_the_init_weights(tmp_path):
    """gpu_train.train warns when --config differs from the config.json beside --init's weights
    (a weight-free field such as block_motion_upsample loads silently under either value); a field
    left out compares equal to its default; weights without a config.json beside them: nothing."""
    from gpu_train.train import config_differences
    from model.config import get_config

    shipped = REPO / "runtime" / "checkpoints" / "base"
    ours = json.loads((shipped / "config.json").read_text())
    assert config_differences(ours, str(shipped / "weights.npz")) == {}
    assert config_differences(get_config("base").to_dict(), str(shipped)) == {"block_motion_upsample": ("nearest", "bilinear")}
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({k: v for k, v in ours.items() if k != "block_motion_upsample"}))
    assert config_differences({**ours, "block_motion_upsample": "nearest"}, f"{run}/weights-00.npz,{run}/weights-01.npz") == {}
    assert config_differences(ours, str(tmp_path / "elsewhere" / "w.npz")) == {}


SCRIPT_CARRY = r"""
import json, sys, torch
from gpu_train import net
config = json.load(open(sys.argv[1]))
torch.manual_seed(0)
model = net.ELFVC(config).eval()
""" + PERTURB_HEADS + r"""
frames = torch.rand(2, 5, 3, 64, 64)
levels = torch.tensor([[0.0, 2.5, 5.0, 7.0, 3.0], [7.0, 3.25, 1.0, 0.5, 6.0]])
with torch.no_grad():
    whole = model.forward_gop(frames, levels, "round")
    head = model.forward_gop(frames[:, :3], levels[:, :3], "round")
    tail = model.forward_gop(frames[:, 2:], levels[:, 2:], "round", carry=head.carry)
    fresh = model.forward_gop(frames[:, 2:], levels[:, 2:], "round")
    c = head.carry  # each carried field matters: dropping one changes what follows
    dropped = {
        "flow": net.GopCarry(c.previous, c.previous2, torch.zeros_like(c.flow), c.state, c.bits),
        "previous2": net.GopCarry(c.previous, c.previous, c.flow, c.state, c.bits),
        "state": net.GopCarry(c.previous, c.previous2, c.flow, torch.zeros_like(c.state), c.bits),
    }
    dropped = {k: (model.forward_gop(frames[:, 2:], levels[:, 2:], "round", carry=v).reconstructions
                   - tail.reconstructions).abs().max().item() for k, v in dropped.items()}
# The trainer's --rollout: frames 0..2 coded without gradients (noise mode, as training codes:
# the decoders see rounded latents), then a GOP of 3 from frame 2 on.
from types import SimpleNamespace
from gpu_train.train import Stepper
model.step_int = config["norm_freeze_steps"] + 1  # frozen normalization statistics: training mode is deterministic
stepper = Stepper(model, None, None, SimpleNamespace(gop=3, lr=1e-4, clip_norm=0.0), torch.device("cpu"), None, capturable=False)
seg, seg_levels, carry = stepper.roll_out(frames, levels, 2)
plain = stepper.roll_out(frames, levels, 0)
with torch.no_grad():
    model.step_int = None
    whole = model.forward_gop(frames, levels, "round")  # the same step as the rollout's
    rolled = model.forward_gop(seg, seg_levels, "round", carry=carry)
print(json.dumps({
    "recon": (tail.reconstructions - whole.reconstructions[:, 2:]).abs().max().item(),
    "bits": (tail.bits - whole.bits[:, 2:]).abs().max().item(),
    "fresh": (fresh.reconstructions[:, 1:] - whole.reconstructions[:, 3:]).abs().max().item(),
    "segment": bool(torch.equal(seg, frames[:, 2:5]) and torch.equal(seg_levels, levels[:, 2:5])),
    "plain": bool(torch.equal(plain[0], frames[:, :3]) and plain[2] is None),
    "rolled": (rolled.reconstructions - whole.reconstructions[:, 2:5]).abs().max().item(),
    "grad": any(t.requires_grad for t in (carry.previous, carry.previous2, carry.flow, carry.state, carry.bits)),
    "dropped": dropped,
}))
"""


def test_a_gop_goes_on_from_its_carry(tmp_path):
    """forward_gop(carry=...) continues a GOP exactly where an earlier call stopped (what
    gpu_train.train's --rollout relies on): 2 + 3 frames equal 5 in one call, bit for bit; starting
    afresh at frame 2 instead (an I-frame) differs, and so does a carry missing any of its flow, frame
before last or state (the heads moved off zero, so the predictor reads them). The trainer's
    roll_out hands on the right frames and a carry without gradients."""
    config = _tiny_base_config(tmp_path / "config.json")
    result = run_torch(["-c", SCRIPT_CARRY, str(config)])
    assert result.returncode == 0, result.stderr[-2000:]
    d = json.loads(result.stdout.strip().splitlines()[-1])
    assert d["recon"] == 0 and d["bits"] == 0 and d["fresh"] > 1e-3, d
    assert min(d["dropped"].values()) > 1e-4, d["dropped"]  # the flow, the frame before and the state are read
    # Stepper.roll_out: the segment is frames 2..4 and goes on from the rollout's decoder state
    # (noise mode rounds for the decoders as round mode does: float rounding apart, the same)
    assert d["segment"] and d["plain"] and not d["grad"] and d["rolled"] < 1e-4, d


@pytest.mark.slow  # ~9 s; fast: test_rollout_depths_follow_rollout_frac, test_campaign_refuses_rollout_before_anything_else
def test_rollout_training_on_cpu(tmp_path):
    """--rollout: GOP steps train --gop frames after 0..N untrained ones, and the run ends as
    usual; bad combinations are one-line errors before any data loads."""
    from gpu_train import train

    _fake_train_set(tmp_path / "train", videos=2)
    config = _tiny_base_config(tmp_path / "config.json")
    common = [f"--config={config}", f"--data={tmp_path / 'train/video'}", "--minutes=10", "--batch=1", "--gop=2",
              "--crop=64", "--device=cpu", "--log_every=2", "--phase_warmup=0"]
    result = run_torch(["-m", "gpu_train.train", *common, f"--out_dir={tmp_path / 'out'}", "--max_steps=6", "--rollout=3",
                        "--precision=bf16", "--freeze=iframe"])
    assert result.returncode == 0, result.stderr[-2000:]
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["gop_steps"] == 6 and progress["final"], progress
    assert "after 0-3 frames coded without gradients (--rollout)" in result.stdout
    assert progress["config"] == json.loads(config.read_text())  # the config itself, for config_beside
    assert all(np.isfinite(r["loss"]) for r in progress["log"]), progress["log"]
    for bad in (["--rollout=-1"], ["--rollout=2", "--graphs", "--device=cuda"], ["--rollout=2", "--gop=1"],
                ["--rollout_frac=0.5"], ["--rollout=2", "--rollout_frac=1.5"]):
        args = train.build_parser().parse_args([*common, "--out_dir=o", *bad])
        with pytest.raises(train.TrainError, match="--rollout"):
            train.check_args(args)


def test_rollout_depths_follow_rollout_frac():
    """--rollout N alone: depths uniform in 0..N (the same draws as before --rollout_frac existed);
    --rollout_frac F: a plain GOP (depth 0) with probability 1 - F, else a depth uniform in 1..N."""
    from gpu_train.train import rollout_depth

    rng, ref = np.random.default_rng(3), np.random.default_rng(3)
    draws = [rollout_depth(rng, 4) for _ in range(500)]
    assert draws == [int(ref.integers(0, 5)) for _ in range(500)] and set(draws) == {0, 1, 2, 3, 4}
    rng = np.random.default_rng(4)
    draws = np.array([rollout_depth(rng, 4, 0.25) for _ in range(4000)])
    assert abs(np.mean(draws > 0) - 0.25) < 0.03, np.mean(draws > 0)  # binomial sd 0.007
    assert set(draws[draws > 0].tolist()) == {1, 2, 3, 4}
    rng = np.random.default_rng(5)
    assert {rollout_depth(rng, 4, 0.0) for _ in range(200)} == {0}
    assert 0 not in {rollout_depth(rng, 4, 1.0) for _ in range(200)}


def test_campaign_refuses_rollout_before_anything_else(tmp_path, capsys):
    """The campaign probes and trains with CUDA graphs, which --rollout's varying GOPs cannot use:
    refused in one line before the GPU check, having spent no time."""
    from gpu_train import campaign

    assert campaign.main([f"--out={tmp_path / 'o'}", "--", "--rollout=4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rollout trains eagerly" in err[0], err
    assert not (tmp_path / "o").exists()


SCRIPT_IMAGE_MIX = r"""
import json, sys, torch
from types import SimpleNamespace
from gpu_train import net
from gpu_train.train import Stepper
config = json.load(open(sys.argv[1]))
model = net.ELFVC(config).train()
model.step_int = model.c["norm_freeze_steps"] + 1
L = model.c["levels"]
lam = net.lambdas(0.2, 0.001, L)
args = SimpleNamespace(lr=1e-4, clip_norm=0.0)
frames, levels = torch.rand(2, 2, 3, 64, 64), torch.tensor([[3, 2], [7, 6]])
stills = (torch.rand(3, 1, 3, 64, 64), torch.tensor([[0], [4], [7]]))
losses = {}
for mix in (0.0, 0.5):
    stepper = Stepper(model, lam, net.LossModulator(2, L, "cpu"), args, torch.device("cpu"), None,
                      capturable=False, mix=mix)
    for with_stills in (False, True):
        torch.manual_seed(1)  # the same quantization noise for the GOP in every call
        with torch.no_grad():
            out = stepper._loss(frames, levels, stills=stills if with_stills else None)
        losses[(mix, with_stills)] = out
plain, mixed = losses[(0.0, False)], losses[(0.5, True)]
stills_loss = net.multilevel_loss(mixed[4], mixed[5], stills[1], torch.ones(1, L), lam)
print(json.dumps({
    "zero_mix": float(losses[(0.0, True)][0] - plain[0]), "no_stills_shape": list(plain[4].shape),
    "mixed_minus_plain": float(mixed[0] - plain[0]), "half_stills_loss": float(0.5 * stills_loss),
    "gop_same": bool(torch.equal(mixed[1], plain[1])), "stills_shape": list(mixed[4].shape),
}))
"""


def test_image_mix_adds_the_weighted_stills_loss(tmp_path):
    """--image_mix W: a GOP step's loss is the GOP's loss plus W times the I-frame loss of the
    stills (mu 1), the GOP's own terms untouched; W 0 adds exactly nothing."""
    config = _tiny_base_config(tmp_path / "config.json")
    result = run_torch(["-c", SCRIPT_IMAGE_MIX, str(config)])
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout)
    assert got["zero_mix"] == 0.0 and got["no_stills_shape"] == [0, 1] and got["stills_shape"] == [3, 1], got
    assert got["gop_same"], got
    assert got["half_stills_loss"] > 0
    assert got["mixed_minus_plain"] == pytest.approx(got["half_stills_loss"], rel=1e-5), got


@pytest.mark.slow  # ~16 s, two training runs; fast: test_image_mix_adds_the_weighted_stills_loss
def test_image_mix_training_on_cpu(tmp_path):
    """A GOP-phase run with --image_mix logs the stills' PSNR and rate by level beside the GOP's,
    counts their FLOPs, and refuses a frozen I-frame codec or a negative weight in one line."""
    from gpu_train import train

    _fake_train_set(tmp_path / "train", videos=2)
    config = _tiny_base_config(tmp_path / "config.json")
    common = [f"--config={config}", f"--data={tmp_path / 'train/video'}", f"--photos={tmp_path / 'train/images'}",
              "--minutes=10", "--batch=1", "--gop=2", "--crop=64", "--image_crop=64", "--device=cpu", "--log_every=2",
              "--phase_warmup=0", "--precision=fp32"]  # the plain run's; the other's bf16 comes after, and wins
    plain = run_torch(["-m", "gpu_train.train", *common, f"--out_dir={tmp_path / 'plain'}", "--max_steps=1"])
    result = run_torch(["-m", "gpu_train.train", *common, f"--out_dir={tmp_path / 'out'}", "--max_steps=5",
                        "--image_mix=0.5", "--image_mix_batch=3", "--precision=bf16"])
    assert plain.returncode == 0 and result.returncode == 0, (plain.stderr[-1000:], result.stderr[-2000:])
    assert "each with 3 stills of 64^2 at loss weight 0.5 (--image_mix)" in result.stdout
    assert "stills (--image_mix) dB by level" in result.stdout and "stills (--image_mix)" not in plain.stdout
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["gop_steps"] == 5 and progress["image_steps"] == 0 and progress["final"], progress
    seen = [v for r in progress["log"] for v in r["still_psnr"] if v is not None]
    assert seen and all(np.isfinite(seen)), progress["log"]
    flops_plain = json.loads((tmp_path / "plain" / "progress.json").read_text())["flops_per_step"]["gop"]
    assert progress["flops_per_step"]["gop"] > flops_plain  # the stills' forward and backward are counted
    for bad, message in ((["--image_mix=-1"], "--image_mix must be >= 0"),
                         (["--image_mix=0.5", "--freeze=iframe"], "--freeze=iframe leaves --image_mix's stills"),
                         (["--image_mix=0.5", "--image_mix_batch=0"], "--image_mix_batch must be >= 1")):
        args = train.build_parser().parse_args([*common, "--out_dir=o", *bad])
        with pytest.raises(train.TrainError, match=message):
            train.check_args(args)


def test_a_campaign_goes_on_at_its_weights_rate_weights(tmp_path):
    """The campaign's --lambda_range comes from the weights it continues: the shipped model card's,
    a training run's flag, else the default; never silently another range."""
    from gpu_train import campaign

    shipped = REPO / "runtime/checkpoints/base"
    card = json.loads((shipped / "model_card.json").read_text())["lambda_range"]
    assert campaign.weights_lambda_range(str(shipped / "weights.npz")) == ",".join(f"{v:g}" for v in card)
    run = tmp_path / "run"
    run.mkdir()
    (run / "progress.json").write_text(json.dumps({"args": {"lambda_range": "0.2,0.0002"}}))
    assert campaign.weights_lambda_range(str(run)) == "0.2,0.0002"
    assert campaign.weights_lambda_range(f"{run / 'weights-00.npz'},{run / 'weights-01.npz'}") == "0.2,0.0002"
    assert campaign.weights_lambda_range("") == campaign.weights_lambda_range(str(tmp_path)) == campaign.DEFAULT_LAMBDA_RANGE
    # A card beside the weights wins over a run's flag (a shipped folder), in its list form.
    (run / "model_card.json").write_text(json.dumps({"lambda_range": [0.3, 0.0001]}))
    assert campaign.weights_lambda_range(str(run / "weights.npz")) == "0.3,0.0001"
    (run / "model_card.json").write_text(json.dumps({"lambda_range": ["x", 1]}))  # unreadable: the next source
    assert campaign.weights_lambda_range(str(run)) == "0.2,0.0002"


def test_a_warm_copy_records_its_rate_weights(tmp_path, capsys):
    """`to_warm` writes FP16 shards, the config and warm.json (step, source, lambda_range as recorded
    beside the weights, or as given); a campaign from the copy reads that range. Weights with no
    recorded range, or a malformed range, are refused before anything is written."""
    from gpu_train import campaign, weights

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"name": "base"}))
    run = tmp_path / "run"
    run.mkdir()
    np.savez(run / "weights-00.npz", step=np.array(7, np.int64), kernel=np.linspace(-1, 1, 12, dtype=np.float32))
    (run / "progress.json").write_text(json.dumps({"args": {"lambda_range": "0.2,0.0002"}}))
    warm = tmp_path / "warm"
    assert weights.main(["to_warm", f"--npz={run}", f"--config={config}", f"--out={warm}"]) == 0
    record = json.loads((warm / "warm.json").read_text())
    assert record == {"step": 7, "source": str(run), "lambda_range": [0.2, 0.0002]}
    arrays = weights.read_arrays(str(warm))
    assert arrays["kernel"].dtype == np.float16 and arrays["step"].dtype == np.int64
    assert json.loads((warm / "config.json").read_text()) == {"name": "base"}
    assert campaign.weights_lambda_range(str(warm)) == "0.2,0.0002"
    # A copy of a copy keeps the range; an explicit one wins.
    assert weights.main(["to_warm", f"--npz={warm}", f"--config={config}", f"--out={tmp_path / 'again'}"]) == 0
    assert campaign.weights_lambda_range(str(tmp_path / "again")) == "0.2,0.0002"
    # A recorded range no run could train at (reversed) is not read: the next source, else the default.
    (tmp_path / "again" / "warm.json").write_text(json.dumps({"lambda_range": [0.0002, 0.2]}))
    assert weights.recorded_lambda_range(str(tmp_path / "again")) is None
    capsys.readouterr()
    assert weights.main(["to_warm", f"--npz={run}", f"--config={config}", f"--out={warm}", "--lambda_range=0.3,0.001"]) == 0
    assert campaign.weights_lambda_range(str(warm / "weights-00.npz")) == "0.3,0.001"
    assert "differs from 0.2,0.0002, recorded beside" in capsys.readouterr().err  # said, not silent
    assert weights.main(["to_warm", f"--npz={run}", f"--config={config}", f"--out={warm}", "--lambda_range=0.2,0.0002"]) == 0
    assert "differs" not in capsys.readouterr().err  # the recorded range repeated: nothing to say
    (run / "progress.json").unlink()
    for extra, message in (([], "no lambda_range recorded beside"),
                           (["--lambda_range=0.001,0.2"], "A > B > 0"), (["--lambda_range=x"], "two numbers")):
        assert weights.main(["to_warm", f"--npz={run}", f"--config={config}", f"--out={tmp_path / 'no'}", *extra]) == 1
        assert message in capsys.readouterr().err
        assert not (tmp_path / "no").exists()


def test_a_stale_warm_copy_is_passed_over(tmp_path, monkeypatch):
    """The campaign starts from gpu_train/warm/CONFIG only while it is ahead of the shipped model:
    a copy left behind after its line was shipped (or an unreadable warm.json) is passed over."""
    from gpu_train import campaign

    monkeypatch.setattr(campaign, "REPO", tmp_path)
    shipped = tmp_path / "runtime" / "checkpoints" / "base"
    warm = tmp_path / "gpu_train" / "warm" / "base"
    shipped.mkdir(parents=True)
    warm.mkdir(parents=True)
    np.savez(shipped / "weights.npz", step=np.array(200))
    np.savez(warm / "weights-00.npz", step=np.array(150))
    (shipped / "training.json").write_text(json.dumps({"model_step": 200}))
    for step, expected in ((150, shipped / "weights.npz"), (200, shipped / "weights.npz"), (250, warm)):
        (warm / "warm.json").write_text(json.dumps({"step": step}))
        assert campaign.default_init("base") == str(expected), step
    (warm / "warm.json").write_text("{")
    assert campaign.default_init("base") == str(shipped / "weights.npz")
