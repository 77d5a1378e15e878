"""PyTorch's side of the GPU check (scripts/gpu-check/check.js runs it on the GPU machine, which
has python3 with torch, torchvision and safetensors but no pip or network).

    python3 torch_side.py bottleneck IN.safetensors OUT.safetensors
        A torchvision ResNeXt-50 stage-1 bottleneck (256 -> 128 (32 groups) -> 256) with the weights,
        input and output gradient from IN, bf16 autocast with fp32 master weights, channels-last,
        two SGD steps (lr and momentum from IN's metadata). Writes y, grad_input and every
        parameter gradient of both steps and the running statistics after the second, plus the
        time of each convolution direction (forward, backward-data, backward-filter) in OUT's
        metadata (JSON under "timings").
    python3 torch_side.py resnext50 OUT.json [steps]
        One resnext50_32x4d training step at batch 64, 224x224: fp32 (TF32 convolutions) and
        bf16 autocast channels-last, mean ms over `steps` after 3 warm-up steps.

Exit code 0 on success; failures print a traceback (the caller records it).
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import Bottleneck, resnext50_32x4d

DEV = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cudnn.benchmark = True


def env_info():
    return {
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu",
    }


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    sync()
    if DEV == "cuda":
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / reps
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) * 1e3 / reps


def bottleneck(inp, out):
    t = load_file(inp)
    with safe_open(inp, "pt") as f:
        meta = f.metadata()
    lr, momentum, steps = float(meta["lr"]), float(meta["momentum"]), int(meta["steps"])
    inplanes, planes, groups, width = (int(meta[k]) for k in ("inplanes", "planes", "groups", "width_per_group"))
    block = Bottleneck(inplanes, planes, groups=groups, base_width=width)
    sd = {k[len("block."):]: v for k, v in t.items() if k.startswith("block.")}
    missing, unexpected = block.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    block = block.to(DEV).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(block.parameters(), lr=lr, momentum=momentum)
    x = t["x"].to(DEV).to(torch.bfloat16).to(memory_format=torch.channels_last).requires_grad_()
    gy = t["gy"].to(DEV).to(torch.bfloat16).to(memory_format=torch.channels_last)
    res = {}
    for s in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(DEV, dtype=torch.bfloat16):
            y = block(x)
        y.backward(gy)
        res[f"step{s}.y"] = y.detach().float().contiguous()
        res[f"step{s}.grad_input"] = x.grad.detach().float().contiguous()
        for n, p in block.named_parameters():
            res[f"step{s}.grad.{n}"] = p.grad.detach().float().contiguous()
        opt.step()
    for n, b in block.named_buffers():
        if "running" in n:
            res[f"final.{n}"] = b.detach().float().contiguous()
    for n, p in block.named_parameters():
        res[f"final.{n}"] = p.detach().float().contiguous()

    # The time of each convolution direction, bf16 channels-last (what autocast runs).
    timings = {}
    a1 = x.detach()
    shapes = [
        ("conv1", a1, block.conv1),
        ("conv2", torch.randn(a1.shape[0], block.conv2.in_channels, a1.shape[2], a1.shape[3], device=DEV,
                              dtype=torch.bfloat16).to(memory_format=torch.channels_last), block.conv2),
        ("conv3", torch.randn(a1.shape[0], block.conv3.in_channels, a1.shape[2], a1.shape[3], device=DEV,
                              dtype=torch.bfloat16).to(memory_format=torch.channels_last), block.conv3),
    ]
    for name, xin, conv in shapes:
        w = conv.weight.detach().to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        args = dict(stride=conv.stride, padding=conv.padding, groups=conv.groups)
        yy = F.conv2d(xin, w, **args)
        g = torch.randn_like(yy)
        fwd = time_ms(lambda: F.conv2d(xin, w, **args))
        common = (g, xin, w, None, list(conv.stride), list(conv.padding), [1, 1], False, [0, 0], conv.groups)
        dgrad = time_ms(lambda: torch.ops.aten.convolution_backward(*common, [True, False, False]))
        wgrad = time_ms(lambda: torch.ops.aten.convolution_backward(*common, [False, True, False]))
        timings[name] = {"forward_ms": fwd, "backward_data_ms": dgrad, "backward_filter_ms": wgrad,
                         "shape": list(xin.shape), "weight": list(w.shape), "groups": conv.groups}
    save_file(res, out, metadata={"timings": json.dumps(timings), "env": json.dumps(env_info())})
    print(json.dumps({"ok": True, "tensors": len(res), "timings": timings}))


def resnext50(out, steps):
    rows = []
    B, hw = (64, 224) if DEV == "cuda" else (2, 64)
    for amp in (False, True):
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False
        model = resnext50_32x4d()
        fmt = torch.channels_last if amp else torch.contiguous_format
        model = model.to(DEV).to(memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        x = torch.randn(B, 3, hw, hw, device=DEV).to(memory_format=fmt)
        tgt = torch.randint(0, 1000, (B,), device=DEV)

        def step():
            with torch.autocast(DEV, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        ms = (time.perf_counter() - t) * 1e3 / steps
        rows.append({"dtype": "bfloat16" if amp else "float32", "channels_last": amp, "B": B, "hw": hw,
                     "ms_per_step": ms, "img_per_s": B / ms * 1e3})
        del model, opt
        if DEV == "cuda":
            torch.cuda.empty_cache()
    json.dump({"env": env_info(), "rows": rows}, open(out, "w"))
    print(json.dumps(rows))


if __name__ == "__main__":
    if sys.argv[1] == "bottleneck":
        bottleneck(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "resnext50":
        resnext50(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]}")
